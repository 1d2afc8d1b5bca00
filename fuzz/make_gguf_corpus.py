"""Writes the seed corpus fuzz/corpus/gguf/ for fuzz/gguf_fuzz.cc (plain Python, no packages).

    python3 fuzz/make_gguf_corpus.py

Seeds: llama.cpp's writer output (tests/fixtures/tiny.gguf, copied), and small hand-made files that
reach each branch of src/format/gguf.cc: a v2 and a v3 header with nothing in them, an empty file,
every metadata value type, nested arrays, a general.alignment of 64 with tensors of several ggml
types, and a few near-misses (a truncated tensor, an offset past the end, a duplicate key) so the
fuzzer starts next to the error paths. The files follow the layout described in src/format/gguf.h (little-endian:
"GGUF", u32 version, u64 tensor_count, u64 kv_count, pairs, tensor infos, padding, data).
"""
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus" / "gguf"

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B",
          U64: "<Q", I64: "<q", F64: "<d"}


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(value(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def kv(key, t, v):
    return s(key) + struct.pack("<I", t) + value(t, v)


def gguf(kvs, tensors=(), version=3, alignment=32, data=b""):
    """tensors: (name, dims, ggml_type, offset)."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    for name, dims, ty, off in tensors:
        head += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        head += struct.pack("<IQ", ty, off)
    if tensors:
        head += b"\0" * (-len(head) % alignment)
    return head + data


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    seeds = {}
    seeds["empty_file.gguf"] = b""
    seeds["v2_header.gguf"] = gguf([], version=2)
    seeds["v3_header.gguf"] = gguf([])
    seeds["all_types.gguf"] = gguf([
        kv("general.architecture", STR, "llama"),
        kv("t.u8", U8, 255), kv("t.i8", I8, -128), kv("t.u16", U16, 65535), kv("t.i16", I16, -2),
        kv("t.u32", U32, 7), kv("t.i32", I32, -7), kv("t.f32", F32, 0.5), kv("t.bool", BOOL, 1),
        kv("t.str", STR, "wörld\nline"), kv("t.u64", U64, 2**64 - 1), kv("t.i64", I64, -(2**63)),
        kv("t.f64", F64, float("nan")), kv("t.empty_str", STR, ""),
    ])
    seeds["arrays.gguf"] = gguf([
        kv("a.ints", ARR, (I32, [1, -2, 3])),
        kv("a.strs", ARR, (STR, ["a", "", "merges x"])),
        kv("a.f32", ARR, (F32, [0.25] * 12)),
        kv("a.bools", ARR, (BOOL, [0, 1])),
        kv("a.empty", ARR, (U64, [])),
        kv("a.nested", ARR, (ARR, [(U8, [1, 2]), (STR, ["x"]), (ARR, [(I8, [-1])])])),
    ])
    # Tensors with general.alignment = 64: F32 [4, 2], F16 [8], Q8_0 [32], Q4_1 [64, 1].
    data = bytearray()
    tensors = []
    for name, dims, ty, nbytes in [("f32", [4, 2], 0, 32), ("f16", [8], 1, 16), ("q8_0", [32], 8, 34),
                                   ("q4_1", [64, 1], 3, 40)]:
        tensors.append((name, dims, ty, len(data)))
        data += bytes(range(nbytes))
        data += b"\0" * (-len(data) % 64)
    align_kv = kv("general.alignment", U32, 64)
    seeds["tensors_align64.gguf"] = gguf([align_kv], tensors, alignment=64, data=bytes(data))
    seeds["tensor_truncated.gguf"] = gguf([], [("w", [16], 0, 0)], data=bytes(60))
    seeds["tensor_offset_past_end.gguf"] = gguf([], [("w", [1], 0, 64)], data=bytes(8))
    seeds["duplicate_key.gguf"] = gguf([kv("k", U8, 1), kv("k", U8, 2)])
    for name, b in seeds.items():
        (OUT / name).write_bytes(b)
    shutil.copy(ROOT / "tests" / "fixtures" / "tiny.gguf", OUT / "tiny.gguf")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(seeds) + 1} seeds to {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
