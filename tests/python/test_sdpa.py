"""Tests of attn.sdpa against the float64 reference in reference.py.

Accuracy rule (FlashAttention's): with ref64 the float64 reference and naive the same
formula computed in the input dtype,
    max|out - ref64| <= 2 * max|naive - ref64| + atol      (atol 1e-6 f32, 1e-4 f16/bf16,
                                                            plus 6e-8 x the softcap)
and the same for lse (always float32; its naive error comes from the float32 naive).
Rows with no visible key must give out == 0 exactly and lse == -inf; never NaN.

The grid is a fixed, seeded list of cases (not a Cartesian product) that uses every value
of every axis at least once; big shapes appear only a few times so the file stays fast.
"""

import dataclasses
import math
import random
import zlib

import numpy as np
import pytest

import attn
from reference import ml_dtypes, np_dtype, sdpa_naive, sdpa_reference, to_bhsd

DTYPES = ("float32", "float16", "bfloat16")
ATOL = {"float32": 1e-6, "float16": 1e-4, "bfloat16": 1e-4}

SEQS_SMALL = ((1, 1), (1, 4096), (17, 3), (113, 203), (203, 113), (256, 512))
SEQS_BIG = ((1023, 1024), (1024, 1023))
HEAD_DIMS = (1, 8, 32, 59, 64, 80, 96, 128, 256)
HEADS = ((9, 9), (9, 3), (9, 1))
KINDS = ("none", "causal_br", "causal_tl", "window", "kv_lens", "bool", "additive", "bcast",
         "softcap")

needs_bf16 = pytest.mark.skipif(ml_dtypes is None,
                                reason="ml_dtypes not installed: bfloat16 untested")


# --------------------------------------------------------------------------------------
# Cases


@dataclasses.dataclass(frozen=True)
class Case:
    B: int
    Hq: int
    Hkv: int
    Sq: int
    Sk: int
    D: int
    dtype: str
    kind: str = "none"
    layout: str = "bhsd"
    causal: bool = False
    causal_align: str = "bottom_right"
    window: tuple = None
    kv_lens: tuple = None          # concrete lengths, one per batch
    kv_dtype: str = "int32"
    mask: str = None               # "bool" | "float" | "bool_dead" | "float_neginf" | "float_dead"
    mask_shape: tuple = None
    softcap: float = 0.0
    scale: float = None

    @property
    def id(self):
        parts = [self.dtype.replace("float", "f"), f"B{self.B}",
                 f"h{self.Hq}x{self.Hkv}", f"q{self.Sq}k{self.Sk}", f"d{self.D}", self.kind]
        if self.layout != "bhsd":
            parts.append(self.layout)
        if self.causal:
            parts.append("causal" + ("TL" if self.causal_align == "top_left" else "BR"))
        elif self.causal_align != "bottom_right":
            parts.append("alignTL")
        if self.window is not None:
            parts.append(f"winL{self.window[0]}_R{self.window[1]}")
        if self.kv_lens is not None:
            parts.append("kv" + "_".join(map(str, self.kv_lens)))
        if self.mask is not None:
            parts.append(f"{self.mask}@{'x'.join(map(str, self.mask_shape))}")
        if self.softcap:
            parts.append(f"cap{self.softcap:g}")
        if self.scale is not None:
            parts.append(f"scale{self.scale:.3g}")
        return "-".join(parts)

    @property
    def seed(self):
        return zlib.crc32(self.id.encode())


def _param(case):
    marks = [needs_bf16] if case.dtype == "bfloat16" else []
    return pytest.param(case, id=case.id, marks=marks)


def _mask_shapes(B, Hq, Sq, Sk):
    """Broadcastable (not full) mask shapes."""
    return [(Sq, Sk), (B, 1, 1, Sk), (1, Hq, 1, Sk), (Sk,), (B, 1, Sq, Sk), (1, 1, Sq, Sk),
            (Hq, Sq, Sk), (Sq, 1)]


def _random_window(rng, Sq, Sk):
    choices = [-1, 0, 1, 3, 16, 64, 150]
    while True:
        w = (rng.choice(choices), rng.choice(choices))
        if w != (-1, -1):
            return w


def _random_kv_lens(rng, B, Sk, allow_zero=False):
    lo = 0 if allow_zero else 1
    lens = [rng.randint(lo, Sk) for _ in range(B)]
    if B > 1 and all(n == Sk for n in lens):
        lens[0] = max(lo, Sk // 2)
    return tuple(lens)


def _specialize(rng, base, kind):
    """Fill in the parameters that the mask kind needs (plus some random extras)."""
    B, Hq, Sq, Sk, D = base["B"], base["Hq"], base["Sq"], base["Sk"], base["D"]
    c = dict(base, kind=kind)
    c["kv_dtype"] = rng.choice(["int32", "int64"])
    if kind == "none":
        if rng.random() < 0.3:
            c["scale"] = rng.choice([0.5, 2.0 / math.sqrt(D)])
    elif kind == "causal_br":
        c["causal"] = True
        if rng.random() < 0.3:
            c["kv_lens"] = _random_kv_lens(rng, B, Sk)
    elif kind == "causal_tl":
        c.update(causal=True, causal_align="top_left")
    elif kind == "window":
        c["window"] = _random_window(rng, Sq, Sk)
        c["causal"] = rng.random() < 0.5
        if rng.random() < 0.25:
            c["kv_lens"] = _random_kv_lens(rng, B, Sk)
    elif kind == "kv_lens":
        c["kv_lens"] = _random_kv_lens(rng, B, Sk)
        c["causal"] = rng.random() < 0.3
    elif kind == "bool":
        c.update(mask="bool", mask_shape=rng.choice([(B, Hq, Sq, Sk), (B, 1, Sq, Sk)]))
        c["causal"] = rng.random() < 0.3
    elif kind == "additive":
        c.update(mask="float", mask_shape=(B, Hq, Sq, Sk))
        c["causal"] = rng.random() < 0.3
    elif kind == "bcast":
        c.update(mask=rng.choice(["bool", "float"]),
                 mask_shape=rng.choice(_mask_shapes(B, Hq, Sq, Sk)))
    elif kind == "softcap":
        c["softcap"] = rng.choice([5.0, 20.0])
        c["scale"] = rng.choice([None, 0.5, 2.0 / math.sqrt(D)])
        c["causal"] = rng.random() < 0.3
        if rng.random() < 0.4:  # softcap happens before the additive mask
            c.update(mask="float", mask_shape=rng.choice([(B, Hq, Sq, Sk), (Sq, Sk)]))
    else:
        raise AssertionError(kind)
    return Case(**c)


def _cycle(rng, values):
    """Endless stream visiting every value once per pass, in a fresh random order each pass."""
    while True:
        vals = list(values)
        rng.shuffle(vals)
        yield from vals


def grid_cases(n_small=180):
    rng = random.Random(20261123)
    seqs, dims, heads = _cycle(rng, SEQS_SMALL), _cycle(rng, HEAD_DIMS), _cycle(rng, HEADS)
    kinds, dtypes, batches = _cycle(rng, KINDS), _cycle(rng, DTYPES), _cycle(rng, (1, 2, 3))
    layouts = _cycle(rng, ("bhsd", "bhsd", "bshd"))
    cases = []
    for _ in range(n_small):
        (Sq, Sk), D, (Hq, Hkv) = next(seqs), next(dims), next(heads)
        B = next(batches)
        if (Sq, Sk) == (256, 512) and D >= 128:
            B = 1  # keep the biggest small shapes cheap
        base = dict(B=B, Hq=Hq, Hkv=Hkv, Sq=Sq, Sk=Sk, D=D, dtype=next(dtypes),
                    layout=next(layouts))
        cases.append(_specialize(rng, base, next(kinds)))

    # Big shapes, used sparingly (B=1).
    big = [
        ((1023, 1024), 64, (9, 3), "float32", "causal_br"),
        ((1024, 1023), 128, (9, 1), "bfloat16", "window"),
        ((1024, 1023), 256, (9, 9), "float16", "kv_lens"),
        ((1023, 1024), 80, (9, 9), "bfloat16", "causal_tl"),
        ((1024, 1023), 96, (9, 3), "float32", "softcap"),
        ((1023, 1024), 128, (9, 1), "float16", "bool"),
    ]
    for (Sq, Sk), D, (Hq, Hkv), dtype, kind in big:
        base = dict(B=1, Hq=Hq, Hkv=Hkv, Sq=Sq, Sk=Sk, D=D, dtype=dtype)
        cases.append(_specialize(rng, base, kind))
    return cases


def dead_row_cases():
    """Cases built to contain rows (or whole batches/heads) with no visible key."""
    C = Case
    return [
        # kv_lens with a 0: the whole batch 0 is empty
        C(3, 9, 3, 17, 3, 32, "float32", "dead", kv_lens=(0, 2, 3)),
        C(3, 9, 1, 113, 203, 64, "float16", "dead", kv_lens=(150, 0, 203), causal=True),
        C(2, 9, 9, 1, 4096, 128, "bfloat16", "dead", kv_lens=(0, 4000)),
        C(2, 9, 3, 8, 16, 8, "float32", "dead", kv_lens=(0, 0)),
        # bottom-right causal with Sq > Sk: the first Sq - Sk rows see nothing
        C(1, 9, 3, 203, 113, 59, "float32", "dead", causal=True),
        C(2, 9, 9, 203, 113, 64, "bfloat16", "dead", causal=True, kv_lens=(113, 40)),
        # windows that leave some rows with nothing
        C(1, 9, 9, 203, 113, 64, "float32", "dead", window=(2, 0)),
        C(2, 9, 3, 203, 113, 32, "float16", "dead", window=(0, 3), causal_align="top_left"),
        C(2, 9, 1, 113, 203, 80, "float32", "dead", window=(5, 5), kv_lens=(0, 60)),
        C(1, 9, 3, 64, 64, 32, "bfloat16", "dead", window=(0, 0), kv_lens=(10,)),
        # boolean masks with all-False rows and an all-False head
        C(2, 9, 3, 113, 203, 64, "float32", "dead", mask="bool_dead", mask_shape=(2, 9, 113, 203)),
        C(2, 9, 9, 17, 3, 8, "float16", "dead", mask="bool_dead", mask_shape=(2, 9, 17, 3)),
        C(1, 9, 1, 256, 512, 128, "bfloat16", "dead", mask="bool_dead",
          mask_shape=(1, 9, 256, 512)),
        C(3, 9, 3, 1, 4096, 64, "float32", "dead", mask="bool_dead", mask_shape=(3, 9, 1, 4096)),
        # additive masks with -inf entries, and rows that are -inf everywhere
        C(2, 9, 3, 113, 203, 64, "float32", "neginf", mask="float_neginf",
          mask_shape=(2, 9, 113, 203)),
        C(2, 9, 3, 113, 203, 64, "float16", "neginf", mask="float_neginf",
          mask_shape=(113, 203), softcap=5.0),
        C(2, 9, 3, 113, 203, 64, "float32", "dead", mask="float_dead",
          mask_shape=(2, 9, 113, 203)),
        C(2, 9, 9, 17, 3, 32, "bfloat16", "dead", mask="float_dead", mask_shape=(2, 9, 17, 3)),
        # window (-1, -1) is no window at all
        C(2, 9, 3, 113, 203, 64, "float32", "window", window=(-1, -1)),
        # window with top-left alignment and no causal flag (alignment applies to the window)
        C(2, 9, 3, 113, 203, 64, "float32", "window", window=(4, 2), causal_align="top_left"),
        C(2, 9, 3, 203, 113, 64, "float16", "window", window=(-1, 3), causal_align="top_left",
          kv_lens=(100, 113)),
    ]


GRID = grid_cases()
DEAD = dead_row_cases()


def test_grid_covers_every_axis_value():
    seen = {(c.Sq, c.Sk) for c in GRID}
    assert seen >= set(SEQS_SMALL) | set(SEQS_BIG)
    assert {c.D for c in GRID} >= set(HEAD_DIMS)
    assert {(c.Hq, c.Hkv) for c in GRID} >= set(HEADS)
    assert {c.kind for c in GRID} >= set(KINDS)
    assert {c.dtype for c in GRID} >= set(DTYPES)
    assert {c.B for c in GRID} >= {1, 2, 3}
    assert {c.layout for c in GRID} >= {"bhsd", "bshd"}
    assert len({c.id for c in GRID + DEAD}) == len(GRID) + len(DEAD), "duplicate case ids"


# --------------------------------------------------------------------------------------
# Inputs


def _shape(layout, B, H, S, D):
    return (B, H, S, D) if layout == "bhsd" else (B, S, H, D)


def make_inputs(case):
    """-> (q, k, v, kwargs for attn.sdpa without layout)."""
    rng = np.random.default_rng(case.seed)
    dt = np_dtype(case.dtype)
    q = rng.standard_normal(_shape(case.layout, case.B, case.Hq, case.Sq, case.D),
                            dtype=np.float32).astype(dt)
    k = rng.standard_normal(_shape(case.layout, case.B, case.Hkv, case.Sk, case.D),
                            dtype=np.float32).astype(dt)
    v = rng.standard_normal(_shape(case.layout, case.B, case.Hkv, case.Sk, case.D),
                            dtype=np.float32).astype(dt)
    kw = dict(causal=case.causal, causal_align=case.causal_align)
    if case.window is not None:
        kw["window"] = case.window
    if case.kv_lens is not None:
        kw["kv_lens"] = np.array(case.kv_lens, dtype=case.kv_dtype)
    if case.softcap:
        kw["softcap"] = case.softcap
    if case.scale is not None:
        kw["scale"] = case.scale
    if case.mask is not None:
        kw["mask"] = _make_mask(rng, case.mask, case.mask_shape)
    return q, k, v, kw


def _make_mask(rng, kind, shape):
    if kind == "bool":
        return rng.random(shape) < 0.8
    if kind == "float":
        return (2.0 * rng.standard_normal(shape)).astype(np.float32)
    if kind == "bool_dead":
        m = rng.random(shape) < 0.7
        rows = m.reshape(-1, shape[-1])
        rows[rng.random(rows.shape[0]) < 0.2] = False    # ~20% of rows see nothing
        if len(shape) == 4:
            m[0, shape[1] - 1] = False                   # one whole (batch, head) empty
        return m
    if kind in ("float_neginf", "float_dead"):
        m = (2.0 * rng.standard_normal(shape)).astype(np.float32)
        m[rng.random(shape) < 0.3] = -np.inf
        if kind == "float_dead":
            rows = m.reshape(-1, shape[-1])
            rows[rng.random(rows.shape[0]) < 0.2] = -np.inf
        return m
    raise AssertionError(kind)


# --------------------------------------------------------------------------------------
# Checks


def _max_err(got, ref):
    d = np.abs(np.asarray(got, dtype=np.float64) - ref)
    return float(d.max()) if d.size else 0.0


def _fa_check(what, got, ref, naive, atol):
    """FlashAttention's rule: max|got - ref| <= 2 max|naive - ref| + atol."""
    err, naive_err = _max_err(got, ref), _max_err(naive, ref)
    bound = 2.0 * naive_err + atol
    if not err <= bound:
        d = np.abs(np.asarray(got, dtype=np.float64) - ref)
        at = np.unravel_index(np.argmax(d), d.shape)
        raise AssertionError(
            f"{what}: max err {err:.3e} > bound {bound:.3e} (naive err {naive_err:.3e}, "
            f"atol {atol:g}); worst at {tuple(int(i) for i in at)}: got "
            f"{float(np.asarray(got)[at]):.7g}, ref {float(ref[at]):.7g}")


def check_against_reference(q, k, v, kw, layout, dtype, out, lse):
    """All accuracy assertions for one attn.sdpa call (out, lse) on (q, k, v, kw)."""
    B, Hq, Sq, _ = to_bhsd(q, layout).shape
    assert out.shape == q.shape, f"out shape {out.shape} != q shape {q.shape}"
    assert out.dtype == q.dtype, f"out dtype {out.dtype} != {q.dtype}"
    assert lse.shape == (B, Hq, Sq), f"lse shape {lse.shape} != {(B, Hq, Sq)}"
    assert lse.dtype == np.float32, f"lse dtype {lse.dtype}"

    ref, ref_lse = sdpa_reference(q, k, v, layout=layout, **kw)
    naive, naive_lse = sdpa_naive(q, k, v, np_dtype(dtype), layout=layout, **kw)
    if dtype != "float32":
        _, naive_lse = sdpa_naive(q, k, v, np.float32, layout=layout, **kw)

    out64 = np.asarray(out, dtype=np.float64)
    assert not np.isnan(out64).any(), f"NaN in out ({int(np.isnan(out64).sum())} values)"
    assert np.isfinite(out64).all(), "inf in out"
    assert not np.isnan(lse).any(), f"NaN in lse ({int(np.isnan(lse).sum())} values)"
    assert not np.isposinf(lse).any(), "+inf in lse"

    empty = np.isneginf(ref_lse)                       # [B, Hq, Sq]: rows with no visible key
    got_empty = np.isneginf(lse)
    if not np.array_equal(got_empty, empty):
        bad = np.argwhere(got_empty != empty)[:5].tolist()
        raise AssertionError(f"lse == -inf on the wrong rows: {int((got_empty != empty).sum())}"
                             f" rows differ, e.g. (b, h, i) = {bad}; expected -inf on "
                             f"{int(empty.sum())} rows")
    out_bhsd = to_bhsd(out64, layout)
    if empty.any():
        dead = out_bhsd[empty]
        assert np.all(dead == 0), (f"fully masked rows must give exactly 0; max |out| there "
                                   f"{np.abs(dead).max():.3e}")

    # With a softcap, the kernel's vectorized tanh (a few ulp, where NumPy's naive one is exact
    # to the last bit) enters the scores multiplied by the cap: allow one float32 ulp of tanh
    # near 1 (6e-8) times the cap on top. A NumPy using AVX-512 makes the naive error, and so
    # the bound, smaller than elsewhere: at cap 20, D 80, 1.5e-6 against a bound of 1.5e-6.
    atol = ATOL[dtype] + kw.get("softcap", 0.0) * 6e-8
    _fa_check("out", out64, ref, naive, atol)
    live = ~empty
    _fa_check("lse", lse[live], ref_lse[live], naive_lse[live], atol)


def run_case(case, **extra):
    q, k, v, kw = make_inputs(case)
    out, lse = attn.sdpa(q, k, v, layout=case.layout, return_lse=True, **kw, **extra)
    check_against_reference(q, k, v, kw, case.layout, case.dtype, out, lse)


# --------------------------------------------------------------------------------------
# Accuracy grid


@pytest.mark.parametrize("case", [_param(c) for c in GRID])
def test_grid(case):
    run_case(case)


@pytest.mark.parametrize("case", [_param(c) for c in DEAD])
def test_fully_masked_rows(case):
    run_case(case)


def _random_sinks(seed, Hq):
    """gpt-oss-like sinks: N(0, 2) per head, head 0 without (-inf), the last one large."""
    sinks = 2.0 * np.random.default_rng(seed).standard_normal(Hq).astype(np.float32)
    if Hq > 1:
        sinks[0] = -np.inf
    if Hq > 2:
        sinks[-1] = 6.0
    return sinks


# Learned sinks over every dtype, GQA, decode and prefill shapes, and the masks (with rows that
# see no key: there the sink takes all the weight, out = 0 and lse = the sink).
_SINK_CASES = GRID[::9] + DEAD[::2]


@pytest.mark.parametrize("case", [_param(c) for c in _SINK_CASES])
def test_sinks(case):
    q, k, v, kw = make_inputs(case)
    kw["sinks"] = _random_sinks(case.seed, case.Hq)
    out, lse = attn.sdpa(q, k, v, layout=case.layout, return_lse=True, **kw)
    check_against_reference(q, k, v, kw, case.layout, case.dtype, out, lse)
    # The sinks matter (they take weight) unless every row is empty.
    plain = attn.sdpa(q, k, v, layout=case.layout, **{x: y for x, y in kw.items() if x != "sinks"})
    if np.abs(np.asarray(plain, np.float32)).max() > 0:
        assert not np.array_equal(out, plain)


def test_sinks_of_minus_infinity_change_nothing():
    case = GRID[3]
    q, k, v, kw = make_inputs(case)
    plain, plain_lse = attn.sdpa(q, k, v, layout=case.layout, return_lse=True, **kw)
    none = np.full(case.Hq, -np.inf, np.float32)
    out, lse = attn.sdpa(q, k, v, layout=case.layout, return_lse=True, sinks=none, **kw)
    assert np.array_equal(out, plain) and np.array_equal(lse, plain_lse)


def test_sink_takes_the_weight_of_rows_without_keys():
    q = np.ones((2, 3, 4, 8), np.float32)
    k = v = np.ones((2, 3, 5, 8), np.float32)
    sinks = np.array([0.5, -np.inf, 3.0], np.float32)
    out, lse = attn.sdpa(q, k, v, kv_lens=[0, 5], sinks=sinks, return_lse=True)
    assert np.all(out[0] == 0)
    np.testing.assert_array_equal(lse[0], np.broadcast_to(sinks[:, None], (3, 4)))
    # Batch 1: five equal scores s = 8 / sqrt(8) and the sink: out = 5 e^s / (5 e^s + e^sink).
    sc = 8 / np.sqrt(8)
    want = 5 * np.exp(sc) / (5 * np.exp(sc) + np.exp(sinks.astype(np.float64)))
    np.testing.assert_allclose(out[1, :, :, 0], np.broadcast_to(want[:, None], (3, 4)), rtol=1e-6)


# Patterns checked without the reference: q = 0 makes the softmax uniform over the visible
# keys, v = identity makes out[i, j] = 1 / (number visible) where key j is visible.
_PATTERN_CASES = [
    ("causal_br_2x5", 2, 5, dict(causal=True), None,
     [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
    ("causal_tl_2x5", 2, 5, dict(causal=True, causal_align="top_left"), None,
     [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]),
    ("causal_br_4x2", 4, 2, dict(causal=True), None,
     [[0, 0], [0, 0], [1, 0], [1, 1]]),
    ("window_1_0", 3, 5, dict(window=(1, 0)), None,
     [[0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]),
    ("window_0_1_tl", 3, 5, dict(window=(0, 1), causal_align="top_left"), None,
     [[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0]]),
    ("window_left_unbounded", 3, 5, dict(window=(-1, 0)), None,
     [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
    ("window_and_causal", 3, 5, dict(window=(1, 2), causal=True), None,
     [[0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]),
    ("kv_lens_3_causal", 3, 5, dict(causal=True), 3,
     [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]),
    ("kv_lens_4_window", 2, 5, dict(window=(0, 0)), 4,
     [[0, 0, 1, 0, 0], [0, 0, 0, 1, 0]]),
]


@pytest.mark.parametrize("dtype", [pytest.param(d, marks=[needs_bf16] if d == "bfloat16"
                                                else []) for d in DTYPES])
@pytest.mark.parametrize("name,Sq,Sk,kw,kv_len,pattern", _PATTERN_CASES,
                         ids=[c[0] for c in _PATTERN_CASES])
def test_visibility_pattern(name, Sq, Sk, kw, kv_len, pattern, dtype):
    dt = np_dtype(dtype)
    q = np.zeros((1, 1, Sq, Sk), dtype=dt)
    k = np.random.default_rng(1).standard_normal((1, 1, Sk, Sk)).astype(dt)
    v = np.eye(Sk, dtype=np.float32).astype(dt)[None, None]
    kw = dict(kw)
    if kv_len is not None:
        kw["kv_lens"] = np.array([kv_len], dtype=np.int32)
    out, lse = attn.sdpa(q, k, v, return_lse=True, **kw)
    pattern = np.array(pattern, dtype=np.float64)
    n = pattern.sum(axis=1, keepdims=True)
    expected = np.where(n > 0, pattern / np.maximum(n, 1), 0.0)
    tol = {"float32": 1e-6, "float16": 1e-3, "bfloat16": 8e-3}[dtype]
    np.testing.assert_allclose(np.asarray(out[0, 0], dtype=np.float64), expected, atol=tol,
                               err_msg=f"visible-key pattern for {name}")
    exp_lse = np.where(n[:, 0] > 0, np.log(np.maximum(n[:, 0], 1)), -np.inf)
    np.testing.assert_allclose(lse[0, 0], exp_lse, rtol=1e-5, atol=1e-6)


def test_return_lse_false_gives_same_output():
    for case in (GRID[0], GRID[5], DEAD[0]):
        q, k, v, kw = make_inputs(case)
        out_only = attn.sdpa(q, k, v, layout=case.layout, **kw)
        assert isinstance(out_only, np.ndarray), f"return_lse=False returned {type(out_only)}"
        out, _ = attn.sdpa(q, k, v, layout=case.layout, return_lse=True, **kw)
        np.testing.assert_array_equal(out_only, out, err_msg=case.id)


def test_explicit_default_scale_is_identical():
    case = Case(2, 9, 3, 113, 203, 59, "float32", causal=True)
    q, k, v, kw = make_inputs(case)
    a = attn.sdpa(q, k, v, **kw)
    b = attn.sdpa(q, k, v, scale=1.0 / math.sqrt(case.D), **kw)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------
# Layouts and strides: every variant must give exactly the contiguous bhsd result.


_LAYOUT_CASES = [
    Case(2, 9, 3, 113, 203, 64, "float32", causal=True),
    Case(3, 9, 1, 17, 3, 59, "float16", window=(1, 1)),
    Case(2, 9, 9, 1, 4096, 128, "bfloat16", kv_lens=(4000, 17)),
    Case(1, 9, 3, 203, 113, 32, "float32", mask="bool", mask_shape=(1, 9, 203, 113)),
    Case(2, 9, 3, 64, 80, 80, "bfloat16", mask="float", mask_shape=(64, 80), softcap=20.0),
]
_LAYOUT_PARAMS = [_param(c) for c in _LAYOUT_CASES]


def _call(q, k, v, kw, **extra):
    return attn.sdpa(q, k, v, return_lse=True, **kw, **extra)


def _assert_same(got, want, what):
    np.testing.assert_array_equal(got[0], want[0], err_msg=f"{what}: out differs")
    np.testing.assert_array_equal(got[1], want[1], err_msg=f"{what}: lse differs")


@pytest.mark.parametrize("case", _LAYOUT_PARAMS)
def test_bshd_equals_bhsd(case):
    q, k, v, kw = make_inputs(case)  # bhsd, contiguous
    want = _call(q, k, v, kw)
    qs, ks, vs = (np.ascontiguousarray(np.swapaxes(x, 1, 2)) for x in (q, k, v))
    out, lse = _call(qs, ks, vs, kw, layout="bshd")
    assert out.shape == qs.shape
    _assert_same((np.swapaxes(out, 1, 2), lse), want, "bshd vs bhsd")


@pytest.mark.parametrize("case", _LAYOUT_PARAMS)
def test_transposed_views_equal_contiguous(case):
    q, k, v, kw = make_inputs(case)
    want = _call(q, k, v, kw)
    # bshd memory viewed as bhsd (non-contiguous: heads are not the slow axis)
    qv, kv, vv = (np.swapaxes(np.ascontiguousarray(np.swapaxes(x, 1, 2)), 1, 2)
                  for x in (q, k, v))
    assert case.Sq == 1 or not qv.flags.c_contiguous
    _assert_same(_call(qv, kv, vv, kw), want, "bhsd view of bshd memory")
    # bhsd memory viewed as bshd
    out, lse = _call(np.swapaxes(q, 1, 2), np.swapaxes(k, 1, 2), np.swapaxes(v, 1, 2), kw,
                     layout="bshd")
    _assert_same((np.swapaxes(out, 1, 2), lse), want, "bshd view of bhsd memory")
    # Fortran order
    _assert_same(_call(*(np.asfortranarray(x) for x in (q, k, v)), kw), want, "Fortran order")


@pytest.mark.parametrize("case", _LAYOUT_PARAMS)
def test_strided_slices_equal_contiguous(case):
    q, k, v, kw = make_inputs(case)
    want = _call(q, k, v, kw)

    def embed(x, rng):
        # x as a view with step 2 along seq and head_dim, step 3 along heads, offset start
        B, H, S, D = x.shape
        big = rng.standard_normal((B, 3 * H, 2 * S + 1, 2 * D + 1)).astype(x.dtype)
        big[:, 1::3, 1::2, 1::2] = x
        view = big[:, 1::3, 1::2, 1::2]
        assert view.base is not None and not view.flags.c_contiguous
        return view

    rng = np.random.default_rng(11)
    views = [embed(x, rng) for x in (q, k, v)]
    _assert_same(_call(*views, kw), want, "step slices")


@pytest.mark.parametrize("case", _LAYOUT_PARAMS)
def test_negative_strides_equal_contiguous(case):
    q, k, v, kw = make_inputs(case)
    # reversed copies read through a reversing view are the original data
    rq, rk, rv = (np.ascontiguousarray(x[:, ::-1, ::-1, ::-1])[:, ::-1, ::-1, ::-1]
                  for x in (q, k, v))
    assert rq.strides[3] < 0
    _assert_same(_call(rq, rk, rv, kw), _call(q, k, v, kw), "negative strides")


@pytest.mark.parametrize("case", _LAYOUT_PARAMS)
def test_zero_strides_equal_contiguous(case):
    q, k, v, kw = make_inputs(case)
    # k/v broadcast over the batch (np.broadcast_to views are read-only)
    kb = np.broadcast_to(k[:1], k.shape)
    vb = np.broadcast_to(v[:1], v.shape)
    assert kb.strides[0] == 0
    _assert_same(_call(q, kb, vb, kw), _call(q, np.ascontiguousarray(kb),
                                              np.ascontiguousarray(vb), kw), "zero strides")


def _read_only(x):
    x = np.array(x)
    x.flags.writeable = False
    return x


@pytest.mark.parametrize("what", ["q", "k", "v", "mask", "kv_lens"])
def test_read_only_inputs_accepted(what):
    # Inputs are only read: read-only arrays (np.broadcast_to, np.frombuffer, memory maps)
    # must work and give the same result.
    case = Case(2, 9, 3, 17, 33, 32, "float32", causal=True, kv_lens=(33, 20),
                mask="float", mask_shape=(2, 9, 17, 33))
    q, k, v, kw = make_inputs(case)
    want = _call(q, k, v, kw)
    args = dict(q=q, k=k, v=v)
    kw = dict(kw)
    if what in args:
        args[what] = _read_only(args[what])
    else:
        kw[what] = _read_only(kw[what])
    _assert_same(_call(args["q"], args["k"], args["v"], kw), want, f"read-only {what}")


def test_mask_and_kv_lens_views_equal_contiguous():
    case = Case(2, 9, 3, 113, 203, 64, "float32")
    q, k, v, _ = make_inputs(case)
    rng = np.random.default_rng(5)
    mask = rng.standard_normal((2, 9, 203, 113)).astype(np.float32).transpose(0, 1, 3, 2)
    kv_big = np.array([[150, 7], [203, 9]], dtype=np.int64)
    kv_view = kv_big[:, 0]                      # stride 16 bytes
    want = _call(q, k, v, dict(mask=np.ascontiguousarray(mask),
                               kv_lens=np.ascontiguousarray(kv_view)))
    _assert_same(_call(q, k, v, dict(mask=mask, kv_lens=kv_view)), want,
                 "transposed mask / strided kv_lens")


def test_broadcast_to_mask_view_equals_contiguous():
    case = Case(2, 9, 3, 113, 203, 64, "float32")
    q, k, v, _ = make_inputs(case)
    bmask = np.random.default_rng(6).random((1, 1, 113, 203)) < 0.7
    want = _call(q, k, v, dict(mask=bmask))
    view = np.broadcast_to(bmask, (2, 9, 113, 203))   # zero strides, read-only
    _assert_same(_call(q, k, v, dict(mask=view)), want, "broadcast_to bool mask view")


# --------------------------------------------------------------------------------------
# Threads: the result must not depend on the thread count.


_THREAD_CASES = [
    Case(2, 9, 3, 113, 203, 64, "float32", causal=True),
    Case(1, 9, 1, 1, 4096, 128, "float32"),
    Case(3, 9, 9, 1, 4096, 64, "float16", kv_lens=(4096, 1000, 1)),
    Case(2, 9, 3, 256, 512, 128, "bfloat16", window=(64, 0)),
    Case(2, 9, 9, 203, 113, 59, "float16", mask="float", mask_shape=(2, 9, 203, 113),
         softcap=5.0),
    Case(1, 9, 3, 1023, 1024, 64, "float32", causal=True),
    Case(3, 9, 1, 17, 3, 256, "bfloat16", kv_lens=(0, 3, 2)),
]


@pytest.mark.parametrize("threads", [2, 3, None], ids=lambda t: f"threads{t}")
@pytest.mark.parametrize("case", [_param(c) for c in _THREAD_CASES])
def test_thread_count_does_not_change_result(case, threads):
    q, k, v, kw = make_inputs(case)
    one = _call(q, k, v, kw, threads=1)
    _assert_same(_call(q, k, v, kw, threads=threads), one, f"threads={threads} vs threads=1")


# --------------------------------------------------------------------------------------
# Errors: ValueError for shapes/values, TypeError for dtypes; message names the argument.


def _arg(name):
    """Regex matching `name` not glued to other letters (so 'q' does not match 'Hq')."""
    return rf"(?<![A-Za-z]){name}(?![A-Za-z])"


def _base():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 4, 5, 8)).astype(np.float32)
    k = rng.standard_normal((2, 2, 6, 8)).astype(np.float32)
    v = rng.standard_normal((2, 2, 6, 8)).astype(np.float32)
    return q, k, v


def _with(q=None, k=None, v=None, **kw):
    bq, bk, bv = _base()
    return (bq if q is None else q, bk if k is None else k, bv if v is None else v), kw


_Q, _K, _V = _base()
_ERROR_CASES = [
    # (id, (args, kwargs), exception, pattern)
    ("q_ndim3", _with(q=_Q[0]), ValueError, _arg("q")),
    ("q_ndim5", _with(q=_Q[None]), ValueError, _arg("q")),
    ("k_ndim3", _with(k=_K[0]), ValueError, _arg("k")),
    ("v_ndim5", _with(v=_V[None]), ValueError, _arg("v")),
    ("batch_mismatch", _with(k=_K[:1], v=_V[:1]), ValueError, r"(?<![A-Za-z])[qk](?![A-Za-z])|batch"),
    ("head_dim_mismatch", _with(k=_K[..., :4], v=_V[..., :4]), ValueError,
     r"(?<![A-Za-z])[qk](?![A-Za-z])|head_dim|(?<![A-Za-z])D(?![A-Za-z])"),
    ("kv_seq_mismatch", _with(v=_V[:, :, :5]), ValueError, _arg("v")),
    ("kv_heads_mismatch", _with(v=_V[:, :1]), ValueError, _arg("v")),
    ("v_head_dim_mismatch", _with(v=_V[..., :4]), ValueError, _arg("v")),
    ("hq_not_multiple", _with(k=np.ones((2, 3, 6, 8), np.float32),
                              v=np.ones((2, 3, 6, 8), np.float32)), ValueError, r"Hq|heads"),
    ("head_dim_zero", _with(q=np.ones((2, 4, 5, 0), np.float32),
                            k=np.ones((2, 2, 6, 0), np.float32),
                            v=np.ones((2, 2, 6, 0), np.float32)), ValueError,
     r"head_dim|(?<![A-Za-z])D(?![A-Za-z])"),
    ("k_dtype_mismatch", _with(k=_K.astype(np.float16)), TypeError, _arg("k")),
    ("v_dtype_mismatch", _with(v=_V.astype(np.float16)), TypeError, _arg("v")),
    ("half_q_float32_kv", _with(q=_Q.astype(np.float16)), TypeError, "only float32 q"),
    ("q_int32", _with(q=_Q.astype(np.int32), k=_K.astype(np.int32), v=_V.astype(np.int32)),
     TypeError, _arg("q")),
    ("q_float64", _with(q=_Q.astype(np.float64), k=_K.astype(np.float64),
                        v=_V.astype(np.float64)), TypeError, _arg("q")),
    ("window_below_minus1", _with(window=(-2, 0)), ValueError, "window"),
    ("window_right_below_minus1", _with(window=(0, -5)), ValueError, "window"),
    ("window_len1", _with(window=(3,)), ValueError, "window"),
    ("window_len3", _with(window=(1, 2, 3)), ValueError, "window"),
    ("kv_lens_wrong_length", _with(kv_lens=np.array([6, 6, 6], np.int32)), ValueError,
     "kv_lens"),
    ("kv_lens_negative", _with(kv_lens=np.array([6, -1], np.int32)), ValueError, "kv_lens"),
    ("kv_lens_above_sk", _with(kv_lens=np.array([7, 6], np.int64)), ValueError, "kv_lens"),
    ("mask_not_broadcastable", _with(mask=np.ones((5, 7), bool)), ValueError, "mask"),
    ("mask_wrong_heads", _with(mask=np.ones((2, 3, 5, 6), np.float32)), ValueError, "mask"),
    ("mask_ndim5", _with(mask=np.ones((1, 2, 4, 5, 6), bool)), ValueError, "mask"),
    ("bad_layout", _with(layout="bsdh"), ValueError, "layout"),
    ("bad_causal_align", _with(causal=True, causal_align="left"), ValueError, "causal_align"),
    ("threads_zero", _with(threads=0), ValueError, "threads"),
    ("threads_negative", _with(threads=-2), ValueError, "threads"),
    ("softcap_negative", _with(softcap=-1.0), ValueError, "softcap"),
    ("scale_nan", _with(scale=float("nan")), ValueError, "scale"),
    ("scale_inf", _with(scale=float("inf")), ValueError, "scale"),
    ("sinks_wrong_length", _with(sinks=np.zeros(3, np.float32)), ValueError, "sinks"),
    ("sinks_2d", _with(sinks=np.zeros((1, 4), np.float32)), ValueError, "sinks"),
    ("sinks_int", _with(sinks=np.zeros(4, np.int32)), ValueError, "sinks"),
    ("sinks_nan", _with(sinks=np.array([0, np.nan, 0, 0], np.float32)), ValueError, r"sinks\[1\] = nan"),
    ("sinks_plus_inf", _with(sinks=np.array([0, 0, np.inf, 0], np.float32)), ValueError, r"sinks\[2\] = inf"),
]


@pytest.mark.parametrize("call,exc,pattern", [c[1:] for c in _ERROR_CASES],
                         ids=[c[0] for c in _ERROR_CASES])
def test_errors(call, exc, pattern):
    (q, k, v), kw = call
    with pytest.raises(exc, match=pattern):
        attn.sdpa(q, k, v, **kw)


def test_window_not_a_pair_scalar():
    q, k, v = _base()
    with pytest.raises((ValueError, TypeError), match="window"):
        attn.sdpa(q, k, v, window=5)


def test_bshd_shape_error_names_argument():
    q, k, v = _base()
    with pytest.raises(ValueError, match=_arg("v")):
        # bshd: k is [B, Sk, Hkv, D]; v has a different Sk
        attn.sdpa(np.swapaxes(q, 1, 2), np.swapaxes(k, 1, 2), np.swapaxes(v, 1, 2)[:, :5],
                  layout="bshd")


# --------------------------------------------------------------------------------------
# Every compiled SIMD target gives correct results.


_HAS_TARGETS = hasattr(attn, "simd_targets") and hasattr(attn, "set_simd_target")
SIMD_TARGETS = list(attn.simd_targets()) if _HAS_TARGETS else []


def _simd_subset():
    """A small slice of the grid: small shapes, every dtype, kind and head_dim."""
    small = [c for c in GRID + DEAD
             if c.B * c.Hq * c.Sq * c.Sk * max(c.D, 16) <= 9 * 2 * 113 * 203 * 64]
    picked, seen = [], set()
    for c in small:  # first case of each (kind, dtype) and each head_dim
        for key in (("kind", c.kind, c.dtype), ("D", c.D), ("seq", c.Sq, c.Sk)):
            if key not in seen:
                seen.add(key)
                if c not in picked:
                    picked.append(c)
    return picked


SIMD_SUBSET = _simd_subset()


@pytest.fixture
def simd_target(request):
    name = request.param
    attn.set_simd_target(name)
    if hasattr(attn, "current_simd_target"):
        assert attn.current_simd_target() == name
    yield name
    try:
        attn.set_simd_target(None)
    except (TypeError, ValueError):
        attn.set_simd_target(SIMD_TARGETS[0])


def test_simd_target_api_present():
    if not _HAS_TARGETS:
        pytest.skip("attn has no simd_targets()/set_simd_target(): per-target tests not run")
    assert SIMD_TARGETS, "attn.simd_targets() is empty"
    assert all(isinstance(t, str) for t in SIMD_TARGETS)


@pytest.mark.parametrize("simd_target", SIMD_TARGETS, indirect=True)
@pytest.mark.parametrize("case", [_param(c) for c in SIMD_SUBSET])
def test_simd_targets(simd_target, case):
    run_case(case)


@pytest.mark.parametrize("simd_target", SIMD_TARGETS, indirect=True)
def test_simd_targets_threads_identical(simd_target):
    case = Case(2, 9, 3, 113, 203, 59, "float32", causal=True)
    q, k, v, kw = make_inputs(case)
    _assert_same(_call(q, k, v, kw, threads=2), _call(q, k, v, kw, threads=1),
                 f"threads=2 vs 1 on {simd_target}")
