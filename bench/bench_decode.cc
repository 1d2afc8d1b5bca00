// Times the split-K decode kernel (attn::Attention, one query row per head over a long KV cache)
// against a plain read of the same K and V bytes on the same threads, the two alternating call by
// call, so that "% of bandwidth" is measured against what this process gets from memory at that
// moment (a benchmark, not a test).
//
//   attn_bench_decode [--sk N] [--dtype f32|bf16] [--threads T] [--iters I] [--huge] [--hot] [--cache]
//
// The shape of issue 2's decode rows: B = 1, Hq = 9, Hkv = 3, D = 64, K and V as [B, H, S, D].
// Without --sk / --dtype it runs Sk in {8192, 32768} x {f32, bf16}. Before each timed call (unless
// --hot) a 64 MiB buffer is read, which evicts K and V from the caches; a read, so that no dirty
// lines are left for the timed call to write back. --huge asks for transparent huge pages on K and
// V (madvise), as a long-lived KV cache could; without it they get the allocator's 4 KiB pages.
// --cache times attn::KVCache::Attend over f16, bf16 and q8_0 caches of the same K and V instead.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attn/attention.h"
#include "attn/kv_cache.h"
#include "core/thread_pool.h"

namespace {

constexpr int64_t kHq = 9, kHkv = 3, kD = 64;
constexpr size_t kHuge = size_t{2} << 20;

// Anonymous memory in whole 2 MiB units (so that huge pages can back all of it), zeroed.
struct Buffer {
  uint8_t* data = nullptr;
  size_t bytes = 0;
  Buffer(size_t n, bool huge) : bytes((n + kHuge - 1) / kHuge * kHuge) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("mmap");
      std::exit(1);
    }
    if (huge) madvise(p, bytes, MADV_HUGEPAGE);
    data = static_cast<uint8_t*>(p);
    std::memset(data, 0, bytes);
  }
  ~Buffer() { munmap(data, bytes); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

// Sum of 32-bit words in two independent 64-byte vectors (GCC vector extension: as wide as the
// build's instruction set allows).
using Words = uint32_t __attribute__((vector_size(64)));
uint32_t SumWords(const uint8_t* p, size_t bytes) {
  Words a = {}, b = {};
  size_t i = 0;
  for (; i + 128 <= bytes; i += 128) {
    Words x, y;
    std::memcpy(&x, p + i, 64);
    std::memcpy(&y, p + i + 64, 64);
    a += x;
    b += y;
  }
  a += b;
  uint32_t s = 0;
  for (int k = 0; k < 16; ++k) s += a[k];
  return s;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Run(int64_t sk, attn::DType dtype, int threads, int iters, bool huge, bool hot) {
  const size_t es = attn::DTypeSize(dtype);
  const size_t kv_bytes = static_cast<size_t>(kHkv * sk * kD) * es;
  Buffer q(kHq * kD * es, false), out(kHq * kD * es, false), k(kv_bytes, huge), v(kv_bytes, huge);
  Buffer flush(64u << 20, false);
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  for (Buffer* b : {&q, &k, &v}) {
    const size_t n = (b == &q ? kHq * kD : kHkv * sk * kD);
    for (size_t i = 0; i < n; ++i) {
      const float x = normal(rng);
      if (dtype == attn::DType::kBF16) {
        const uint16_t h = attn::FloatToBF16(x);
        std::memcpy(b->data + 2 * i, &h, 2);
      } else {
        std::memcpy(b->data + 4 * i, &x, 4);
      }
    }
  }
  for (size_t i = 0; i < flush.bytes; i += 4096) flush.data[i] = static_cast<uint8_t>(i >> 12);
  using attn::TensorView;
  const TensorView Q = TensorView::Contiguous(q.data, dtype, 1, kHq, 1, kD).SwapAxes12();
  const TensorView K = TensorView::Contiguous(k.data, dtype, 1, kHkv, sk, kD).SwapAxes12();
  const TensorView V = TensorView::Contiguous(v.data, dtype, 1, kHkv, sk, kD).SwapAxes12();
  const TensorView O = TensorView::Contiguous(out.data, dtype, 1, 1, kHq, kD);
  attn::AttentionOptions opt;
  opt.threads = threads;

  attn::ThreadPool& pool = attn::ThreadPool::Global();
  volatile uint32_t sink = 0;
  std::vector<uint32_t> part(threads);
  auto evict = [&] {
    if (!hot) sink = sink + SumWords(flush.data, flush.bytes);
  };
  std::vector<double> t_attn, t_read;
  for (int it = 0; it < iters; ++it) {
    evict();
    auto t0 = std::chrono::steady_clock::now();
    attn::Attention(Q, K, V, O, opt);
    t_attn.push_back(Seconds(t0));
    evict();
    t0 = std::chrono::steady_clock::now();
    // The same bytes on the same pool: each thread reads its share of K, then of V.
    pool.Run(threads, threads, [&](int64_t t, int) {
      const size_t lo = kv_bytes * t / threads / 64 * 64, hi = kv_bytes * (t + 1) / threads / 64 * 64;
      part[t] = SumWords(k.data + lo, hi - lo) + SumWords(v.data + lo, hi - lo);
    });
    t_read.push_back(Seconds(t0));
    for (uint32_t x : part) sink = sink + x;
  }
  const double a = Median(t_attn), r = Median(t_read), gb = 2.0 * kv_bytes / 1e9;
  std::printf(
      "Sk %6lld %-4s %s pages%s: attn %.3f ms %5.1f GB/s | plain read %.3f ms %5.1f GB/s | attn/read "
      "%3.0f%%\n",
      static_cast<long long>(sk), attn::DTypeName(dtype), huge ? "huge" : "4k  ", hot ? ", hot" : "", a * 1e3,
      gb / a, r * 1e3, gb / r, 100.0 * r / a);
}

// --cache: one float32 query row per head over attn::KVCache objects holding the same float32 K
// and V as f16, bf16 and q8_0 (a language model's decode step), calls alternating between them.
void RunCaches(int64_t sk, int threads, int iters, bool hot) {
  const std::vector<attn::DType> types = {attn::DType::kF16, attn::DType::kBF16, attn::DType::kQ8_0};
  std::vector<float> q(kHq * kD), out(kHq * kD), k(kHkv * sk * kD), v(kHkv * sk * kD);
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  for (auto* x : {&q, &k, &v})
    for (float& f : *x) f = normal(rng);
  std::vector<std::unique_ptr<attn::KVCache>> caches;
  using attn::TensorView;
  for (attn::DType t : types) {
    caches.push_back(std::make_unique<attn::KVCache>(1, kHkv, kD, sk, t));
    caches.back()->Append(TensorView::Contiguous(k.data(), attn::DType::kF32, 1, sk, kHkv, kD),
                          TensorView::Contiguous(v.data(), attn::DType::kF32, 1, sk, kHkv, kD));
  }
  Buffer flush(64u << 20, false);
  for (size_t i = 0; i < flush.bytes; i += 4096) flush.data[i] = static_cast<uint8_t>(i >> 12);
  volatile uint32_t sink = 0;
  attn::AttentionOptions opt;
  opt.threads = threads;
  std::vector<std::vector<double>> t(types.size());
  for (int it = 0; it < iters; ++it)
    for (size_t c = 0; c < types.size(); ++c) {
      if (!hot) sink = sink + SumWords(flush.data, flush.bytes);
      const auto t0 = std::chrono::steady_clock::now();
      caches[c]->Attend(TensorView::Contiguous(q.data(), attn::DType::kF32, 1, 1, kHq, kD),
                        TensorView::Contiguous(out.data(), attn::DType::kF32, 1, 1, kHq, kD), opt);
      t[c].push_back(Seconds(t0));
    }
  for (size_t c = 0; c < types.size(); ++c) {
    const double bytes = 2.0 * kHkv * sk * kD * (types[c] == attn::DType::kQ8_0 ? 34.0 / 32.0 : 2.0);
    const double a = Median(t[c]);
    std::printf("Sk %6lld %-8s cache%s: attend %.3f ms %5.1f GB/s of K and V (%.1f MB)\n",
                static_cast<long long>(sk), attn::DTypeName(types[c]), hot ? " (hot)" : "", a * 1e3,
                bytes / a / 1e9, bytes / 1e6);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sks = {8192, 32768};
  std::vector<attn::DType> dtypes = {attn::DType::kF32, attn::DType::kBF16};
  int threads = 2, iters = 200;
  bool huge = false, hot = false, cache = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--sk" && has_value) {
      sks = {std::atoll(argv[++i])};
    } else if (a == "--dtype" && has_value) {
      const std::string t = argv[++i];
      if (t != "f32" && t != "bf16") {
        std::fprintf(stderr, "--dtype: expected f32 or bf16, got '%s'\n", t.c_str());
        return 2;
      }
      dtypes = {t == "f32" ? attn::DType::kF32 : attn::DType::kBF16};
    } else if (a == "--threads" && has_value) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--iters" && has_value) {
      iters = std::atoi(argv[++i]);
    } else if (a == "--huge") {
      huge = true;
    } else if (a == "--hot") {
      hot = true;
    } else if (a == "--cache") {
      cache = true;
    } else {
      std::fprintf(
          stderr,
          "usage: %s [--sk N] [--dtype f32|bf16] [--threads T] [--iters I] [--huge] [--hot] [--cache]\n",
          argv[0]);
      return 2;
    }
  }
  if (threads < 1 || iters < 1 || sks[0] < 1) {
    std::fprintf(stderr, "--threads, --iters and --sk must be positive\n");
    return 2;
  }
  std::printf("decode B1 H%lld/%lld D%lld, %d threads, median of %d alternating calls each\n",
              static_cast<long long>(kHq), static_cast<long long>(kHkv), static_cast<long long>(kD), threads,
              iters);
  if (cache) {
    for (int64_t sk : sks) RunCaches(sk, threads, iters, hot);
    return 0;
  }
  for (attn::DType dt : dtypes)
    for (int64_t sk : sks) Run(sk, dt, threads, iters, huge, hot);
  return 0;
}
