// Gemm (gemm.h): pack both operands into slivers, then register tiles of kMR x 2 vectors,
// dispatched once per call to the best Highway target.
//
// Packed layout (BLIS): A sliver s holds rows [s kMR, s kMR + kMR) as [K][kMR]; B sliver t holds
// columns [t NR, t NR + NR) as [K][NR], NR = 2 vectors; edge slivers are zero-padded. A is read in
// place instead when its rows are contiguous (the forward and input-gradient products): the
// kernel then reads kMR sequential streams, and only B, which every A sliver of a task reuses,
// is copied. The tile
// kernel broadcasts one A value per row and multiplies it into two B vectors: per k, 2 vector
// loads, kMR broadcasts and 2 kMR FMAs, with the 2 kMR accumulators in registers (6 x 2 = 12 of the
// 16 AVX2 registers; an earlier experiment here found 6 x 2 the best AVX2 tile).
//
// Tasks are blocks of kTaskSlivers A slivers x kTaskSliversB B slivers of C. Inside a task, k runs
// in blocks of kKc (a B sliver block stays in L1 while the task's A slivers stream from L2); each
// C tile adds its k blocks in order, so every C element has one fixed summation order.
#include "kernels/gemm.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "attn/error.h"
#include "core/aligned.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#ifndef ATTN_KERNELS_GEMM_CALL_DEFINED_
#define ATTN_KERNELS_GEMM_CALL_DEFINED_
namespace attn::kernels {
struct GemmCall {
  int64_t M, N, K;
  GemmOperand a, b;
  float* c;
  int64_t ldc;
  bool accumulate;
  ThreadPool* pool;
  int threads;
};
}  // namespace attn::kernels
#endif

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
namespace {

constexpr int64_t kMR = 6;            // C rows per register tile
constexpr int64_t kKc = 256;          // k per block inside a task
constexpr int64_t kTaskSlivers = 8;   // A slivers (48 rows of C) per task
constexpr int64_t kTaskSliversB = 4;  // B slivers per task

thread_local GrowBuffer<float> tls_packed;  // the caller's packed A and B

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows [m0, m0 + kMR) of A (zero past M) as [K][kMR].
void PackA(const GemmOperand& a, int64_t M, int64_t K, int64_t m0, float* HWY_RESTRICT dst) {
  const int64_t rows = std::min(kMR, M - m0);
  if (rows < kMR) std::fill(dst, dst + K * kMR, 0.0f);
  if (a.col_stride == 1) {  // rows contiguous: read along k
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = a.data + (m0 + r) * a.row_stride;
      for (int64_t k = 0; k < K; ++k) dst[k * kMR + r] = src[k];
    }
    return;
  }
  for (int64_t k = 0; k < K; ++k) {  // columns contiguous (row_stride 1) or general
    const float* src = a.data + k * a.col_stride + m0 * a.row_stride;
    for (int64_t r = 0; r < rows; ++r) dst[k * kMR + r] = src[r * a.row_stride];
  }
}

// Columns [n0, n0 + nr) of B (zero past N) as [K][nr].
void PackB(const GemmOperand& b, int64_t N, int64_t K, int64_t n0, int64_t nr, float* HWY_RESTRICT dst) {
  const int64_t cols = std::min(nr, N - n0);
  if (cols < nr) std::fill(dst, dst + K * nr, 0.0f);
  if (b.col_stride == 1) {  // rows of B contiguous
    for (int64_t k = 0; k < K; ++k)
      std::memcpy(dst + k * nr, b.data + k * b.row_stride + n0, cols * sizeof(float));
    return;
  }
  for (int64_t j = 0; j < cols; ++j) {  // columns of B contiguous (B = W^T) or general
    const float* src = b.data + (n0 + j) * b.col_stride;
    for (int64_t k = 0; k < K; ++k) dst[k * nr + j] = src[k * b.row_stride];
  }
}

// c[r][0 .. 2N) (+)= sum_k a[r][k] bp[k][0 .. 2N) for r < kMR, a[r][k] = ap[r * a_rs + k * a_ks].
HWY_INLINE void Tile(const float* HWY_RESTRICT ap, int64_t a_rs, int64_t a_ks, const float* HWY_RESTRICT bp,
                     int64_t kc, float* HWY_RESTRICT c, int64_t ldc, bool load_c) {
  const hn::ScalableTag<float> df;
  using V = hn::Vec<decltype(df)>;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df)), nr = 2 * N;
  V c00 = hn::Zero(df), c01 = hn::Zero(df), c10 = hn::Zero(df), c11 = hn::Zero(df);
  V c20 = hn::Zero(df), c21 = hn::Zero(df), c30 = hn::Zero(df), c31 = hn::Zero(df);
  V c40 = hn::Zero(df), c41 = hn::Zero(df), c50 = hn::Zero(df), c51 = hn::Zero(df);
  const float* a0 = ap;
  const float* a1 = ap + a_rs;
  const float* a2 = ap + 2 * a_rs;
  const float* a3 = ap + 3 * a_rs;
  const float* a4 = ap + 4 * a_rs;
  const float* a5 = ap + 5 * a_rs;
  for (int64_t k = 0, ka = 0; k < kc; ++k, ka += a_ks, bp += nr) {
    const V b0 = hn::Load(df, bp), b1 = hn::Load(df, bp + N);
    V a = hn::Set(df, a0[ka]);
    c00 = hn::MulAdd(a, b0, c00), c01 = hn::MulAdd(a, b1, c01);
    a = hn::Set(df, a1[ka]);
    c10 = hn::MulAdd(a, b0, c10), c11 = hn::MulAdd(a, b1, c11);
    a = hn::Set(df, a2[ka]);
    c20 = hn::MulAdd(a, b0, c20), c21 = hn::MulAdd(a, b1, c21);
    a = hn::Set(df, a3[ka]);
    c30 = hn::MulAdd(a, b0, c30), c31 = hn::MulAdd(a, b1, c31);
    a = hn::Set(df, a4[ka]);
    c40 = hn::MulAdd(a, b0, c40), c41 = hn::MulAdd(a, b1, c41);
    a = hn::Set(df, a5[ka]);
    c50 = hn::MulAdd(a, b0, c50), c51 = hn::MulAdd(a, b1, c51);
  }
  const auto store = [&](float* row, V v0, V v1) {
    if (load_c) v0 = hn::Add(hn::LoadU(df, row), v0), v1 = hn::Add(hn::LoadU(df, row + N), v1);
    hn::StoreU(v0, df, row);
    hn::StoreU(v1, df, row + N);
  };
  store(c, c00, c01);
  store(c + ldc, c10, c11);
  store(c + 2 * ldc, c20, c21);
  store(c + 3 * ldc, c30, c31);
  store(c + 4 * ldc, c40, c41);
  store(c + 5 * ldc, c50, c51);
}

}  // namespace

void GemmImpl(const GemmCall& g) {
  const hn::ScalableTag<float> df;
  const int64_t nr = 2 * static_cast<int64_t>(hn::Lanes(df));
  const int64_t M = g.M, N = g.N, K = g.K;
  const int64_t sa = CeilDiv(M, kMR), sb = CeilDiv(N, nr);
  // A is read in place when its rows are contiguous (kMR sequential streams); only a partial last
  // sliver is then packed. Otherwise (A = dy^T of a weight gradient: kMR floats per k, a new cache
  // line every k) packing measured faster.
  const bool a_direct = g.a.col_stride == 1;
  const int64_t first_packed = a_direct ? M / kMR : 0, n_packed = sa - first_packed;
  const size_t a_size = static_cast<size_t>((n_packed * kMR * K + 15) / 16 * 16),
               b_size = static_cast<size_t>(sb * nr * K);
  float* packed = tls_packed.Get(a_size + b_size);
  float* ap = packed;
  float* bp = packed + a_size;  // 64-byte aligned: the kernel's B loads are aligned
  g.pool->Run(n_packed + sb, g.threads, [&](int64_t s, int) {
    if (s < n_packed) return PackA(g.a, M, K, (first_packed + s) * kMR, ap + s * kMR * K);
    s -= n_packed;
    PackB(g.b, N, K, s * nr, nr, bp + s * nr * K);
  });

  const int64_t tasks_m = CeilDiv(sa, kTaskSlivers), tasks_n = CeilDiv(sb, kTaskSliversB);
  g.pool->Run(tasks_m * tasks_n, g.threads, [&](int64_t task, int) {
    const int64_t s0 = task / tasks_n * kTaskSlivers, s1 = std::min(sa, s0 + kTaskSlivers);
    const int64_t t0 = task % tasks_n * kTaskSliversB, t1 = std::min(sb, t0 + kTaskSliversB);
    HWY_ALIGN float edge[kMR * 64];  // an edge tile (nr <= 32 floats on every target)
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t kc = std::min(kKc, K - k0);
      const bool load_c = g.accumulate || k0 > 0;
      for (int64_t t = t0; t < t1; ++t) {
        const float* bs = bp + t * nr * K + k0 * nr;
        const int64_t n0 = t * nr, cols = std::min(nr, N - n0);
        for (int64_t s = s0; s < s1; ++s) {
          const int64_t m0 = s * kMR, rows = std::min(kMR, M - m0);
          const float* as;
          int64_t a_rs, a_ks;
          if (s < first_packed) {
            as = g.a.data + m0 * g.a.row_stride + k0 * g.a.col_stride, a_rs = g.a.row_stride,
            a_ks = g.a.col_stride;
          } else {
            as = ap + (s - first_packed) * kMR * K + k0 * kMR, a_rs = 1, a_ks = kMR;
          }
          float* c = g.c + m0 * g.ldc + n0;
          if (rows == kMR && cols == nr) {
            Tile(as, a_rs, a_ks, bs, kc, c, g.ldc, load_c);
            continue;
          }
          for (int64_t r = 0; r < kMR; ++r) {
            for (int64_t j = 0; j < nr; ++j)
              edge[r * nr + j] = load_c && r < rows && j < cols ? c[r * g.ldc + j] : 0;
          }
          Tile(as, a_rs, a_ks, bs, kc, edge, nr, true);
          for (int64_t r = 0; r < rows; ++r) std::memcpy(c + r * g.ldc, edge + r * nr, cols * sizeof(float));
        }
      }
    }
  });
}

}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn {
namespace kernels {
HWY_EXPORT(GemmImpl);
}  // namespace kernels

namespace {
void CheckGemm(int64_t M, int64_t N, int64_t K, const GemmOperand& a, const GemmOperand& b, const float* c,
               int64_t ldc) {
  if (M < 0 || N < 0 || K < 0) {
    throw Error("Gemm: M, N, K = " + std::to_string(M) + ", " + std::to_string(N) + ", " + std::to_string(K) +
                " (must be >= 0)");
  }
  if (ldc < N)
    throw Error("Gemm: ldc = " + std::to_string(ldc) + " (must be >= N = " + std::to_string(N) + ")");
  if (M > 0 && N > 0 && c == nullptr) throw Error("Gemm: c is null");
  if (M > 0 && N > 0 && K > 0 && (a.data == nullptr || b.data == nullptr))
    throw Error("Gemm: a or b is null");
}
}  // namespace

void Gemm(int64_t M, int64_t N, int64_t K, const GemmOperand& a, const GemmOperand& b, float* c, int64_t ldc,
          bool accumulate, ThreadPool& pool, int threads) {
  CheckGemm(M, N, K, a, b, c, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) {
      for (int64_t m = 0; m < M; ++m) std::fill(c + m * ldc, c + m * ldc + N, 0.0f);
    }
    return;
  }
  // Threads worth waking: one per ~2 MFLOP (~30 us on one core), so the tiny products of a small
  // model stay on the calling thread. The split of the work never depends on this.
  const int asked = threads <= 0 ? pool.size() : std::min(threads, pool.size());
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  const int useful = static_cast<int>(std::clamp(flops / 2e6, 1.0, static_cast<double>(asked)));
  const kernels::GemmCall call{M, N, K, a, b, c, ldc, accumulate, &pool, useful};
  HWY_DYNAMIC_DISPATCH(kernels::GemmImpl)(call);
}

void GemmReference(int64_t M, int64_t N, int64_t K, const GemmOperand& a, const GemmOperand& b, float* c,
                   int64_t ldc, bool accumulate) {
  CheckGemm(M, N, K, a, b, c, ldc);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double sum = accumulate ? c[m * ldc + n] : 0.0;
      for (int64_t k = 0; k < K; ++k)
        sum += static_cast<double>(a.data[m * a.row_stride + k * a.col_stride]) *
               b.data[k * b.row_stride + n * b.col_stride];
      c[m * ldc + n] = static_cast<float>(sum);
    }
  }
}

}  // namespace attn
#endif
