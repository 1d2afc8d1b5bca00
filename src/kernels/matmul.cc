// MatMul: y = x W^T over weight block formats (see matmul.h), dispatched per Highway target.
//
// Work split: tasks are (block of W rows) x (chunk of x rows), sized from the shapes only; inside
// a task, register tiles of kTileRows W rows x kTileCols x rows (matmul-inl.h). A task first
// converts its rows' f16 block scales to f32 once, then sweeps the x rows of its chunk, so each
// loaded weight block serves kTileCols activation rows and the task's W rows stay in L1.
// Integer block types quantize x once per call (quantize.h) before the tasks start.
#include "kernels/matmul.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "attn/error.h"
#include "core/aligned.h"
#include "core/thread_pool.h"
#include "kernels/cpu_features.h"
#include "kernels/quantize.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/kquants-inl.h"
#include "kernels/matmul-inl.h"
#include "kernels/matmul_panel-inl.h"

#ifndef ATTN_KERNELS_MATMUL_CALL_DEFINED_
#define ATTN_KERNELS_MATMUL_CALL_DEFINED_
namespace attn::kernels {
// The arguments of one MatMul call, validated.
struct MatMulCall {
  const WeightMatrix* w;
  const float* x;
  int64_t n, ldx;
  float* y;
  int64_t ldy;
  ThreadPool* pool;
  int threads;
};
// Several products that share their input rows (see MatMulShared in matmul.h), validated: n rows
// of x (stride ldx), at most kGroupRows; product k writes row i at ys[k] + i * ldys[k].
struct MatMulGroupCall {
  const WeightMatrix* const* ws;
  float* const* ys;
  const int64_t* ldys;
  int count;
  const float* x;
  int64_t n, ldx;
  ThreadPool* pool;
  int threads;
};
// Up to kGroupRows x rows (a batch of sequences decoding together) go through the matrix-vector
// kernels in one call, each weight tile read from memory once and applied to every row while in
// L1: a row's result is then bit for bit its one-row result. More rows take the matrix kernels
// (the panel kernels only pay for building their panels above about 24 rows: attn bench
// --parallel, 2026-12-04).
constexpr int64_t kGroupRows = 24;
}  // namespace attn::kernels
#endif

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace {

using matmul::kQK;

// Integer blocks: 2 x 4 register tiles. Measured at n = 512 on Zen 3 (AVX2), 2 x 4, 3 x 4, 4 x 3
// and 4 x 4 all ran within noise of each other (70-80 GOP/s per core); 2 x 4 keeps its
// 8 accumulators, 4 x blocks, the weights and two constants in registers without spills.
constexpr int kTileRows = 2;  // W rows per register tile
constexpr int kTileCols = 4;  // x rows per register tile
#if ATTN_MATMUL_X86_INT8
// Matrix-vector: W rows per call of RowsQX (independent accumulator chains sharing x).
constexpr int kVectorRows = 4;
#endif
// Float weights: 8 accumulators, 4 weight vectors and x within the 16 AVX2 registers.
constexpr int kFloatTileRows = 4;
constexpr int kFloatTileCols = 2;
constexpr int64_t kChunkX = 64;  // x rows per task (n > 1), a multiple of the tile columns

thread_local GrowBuffer<uint8_t> tls_task;  // per-task weight scales (and expanded rows)
thread_local GrowBuffer<uint8_t> tls_x;     // the caller's quantized activations

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// W rows per task: small blocks balance threads; a tall matrix-vector product (the unembedding)
// takes bigger ones so per-task overhead stays negligible. A multiple of every tile height.
int64_t RowsPerTask(int64_t rows, int64_t n) {
  if (n == 1 && rows >= 8192) return 64;
  return 16;
}

// Threads worth using for a product. Handing a job to a spinning pool thread costs well under a
// microsecond (core/thread_pool.h), but a product that is over in a few microseconds still does
// not gain from a second thread, so a product gets one thread per ~kMicrosPerThread of estimated
// single-thread work (weights read at ~10 GB/s for n = 1, ~70 GOP/s otherwise), up to the threads
// asked for. The split of the work never depends on this, so neither do the results.
constexpr double kMicrosPerThread = 4.0;
int ThreadsFor(double work_us, int threads, const ThreadPool& pool) {
  const int asked = threads <= 0 ? pool.size() : std::min(threads, pool.size());
  return std::clamp(static_cast<int>(work_us / kMicrosPerThread), 1, asked);
}
// Estimated single-thread time of a matrix-vector product reading `bytes` of weights.
double MatVecMicros(double bytes) { return bytes / 10e3; }

int UsefulThreads(const MatMulCall& c) {
  const WeightMatrix& w = *c.w;
  const double work_us =
      c.n == 1 ? MatVecMicros(static_cast<double>(w.row_bytes) * w.rows) : 2.0 * w.rows * w.cols * c.n / 70e3;
  return ThreadsFor(work_us, c.threads, *c.pool);
}

// Runs the tasks of a product. For a matrix-vector product (n = 1, memory-bound; tasks in row
// order) each thread works through a contiguous share of the rows: tasks handed out alternately
// (5.8 KB each for 576 columns of Q4_1) broke every thread's reads into short pieces that the
// hardware prefetcher did not follow, and two threads ran slower than one (attn_bench_matmul,
// 2026-12-03). Results do not depend on which thread runs a task.
void RunTasks(ThreadPool& pool, int64_t n_tasks, int threads, int64_t n,
              const std::function<void(int64_t, int)>& fn) {
  if (n == 1) {
    pool.RunContiguous(n_tasks, threads, fn);
  } else {
    pool.Run(n_tasks, threads, fn);
  }
}

// Calls f.template operator()<R, C>(r0, i0) for every tile of a rows x n block, with the largest
// tile R <= RMax, C <= CMax that fits at the edges.
template <int R, int C, class F>
HWY_INLINE void CallTile(int rr, int cc, const F& f, int64_t r0, int64_t i0) {
  if constexpr (R > 1) {
    if (rr < R) return CallTile<R - 1, C>(rr, cc, f, r0, i0);
  }
  if constexpr (C > 1) {
    if (cc < C) return CallTile<R, C - 1>(rr, cc, f, r0, i0);
  }
  f.template operator()<R, C>(r0, i0);
}

template <int RMax, int CMax, class F>
HWY_INLINE void ForEachTile(int64_t rows, int64_t n, const F& f) {
  for (int64_t i0 = 0; i0 < n; i0 += CMax) {
    const int cc = static_cast<int>(std::min<int64_t>(CMax, n - i0));
    for (int64_t r0 = 0; r0 < rows; r0 += RMax) {
      const int rr = static_cast<int>(std::min<int64_t>(RMax, rows - r0));
      CallTile<RMax, CMax>(rr, cc, f, r0, i0);
    }
  }
}

// Calls f.template operator()<kType>() for an integer block type (the 32-value formats and the K
// formats); returns false, calling nothing, for any other type.
template <class F>
bool WithIntegerType(gguf::TensorType type, const F& f) {
  using T = gguf::TensorType;
  switch (type) {
    case T::kQ4_0:
      return f.template operator()<T::kQ4_0>(), true;
    case T::kQ4_1:
      return f.template operator()<T::kQ4_1>(), true;
    case T::kQ5_0:
      return f.template operator()<T::kQ5_0>(), true;
    case T::kQ5_1:
      return f.template operator()<T::kQ5_1>(), true;
    case T::kQ8_0:
      return f.template operator()<T::kQ8_0>(), true;
    case T::kQ4_K:
      return f.template operator()<T::kQ4_K>(), true;
    case T::kQ5_K:
      return f.template operator()<T::kQ5_K>(), true;
    case T::kQ6_K:
      return f.template operator()<T::kQ6_K>(), true;
    case T::kQ2_K:
      return f.template operator()<T::kQ2_K>(), true;
    case T::kQ3_K:
      return f.template operator()<T::kQ3_K>(), true;
    case T::kIQ4_NL:
      return f.template operator()<T::kIQ4_NL>(), true;
    case T::kIQ4_XS:
      return f.template operator()<T::kIQ4_XS>(), true;
    case T::kMXFP4:
      return f.template operator()<T::kMXFP4>(), true;
    default:
      return false;
  }
}

// Rows of x quantized: q [n][cols], d [n][ldd], s [n][lds].
void QuantizeRowsImpl(const float* x, int64_t n, int64_t ldx, int64_t cols, int8_t* q, float* d, int64_t ldd,
                      float* s, int64_t lds) {
  for (int64_t i = 0; i < n; ++i)
    matmul::QuantizeRow(x + i * ldx, cols, q + i * cols, d + i * ldd, s + i * lds);
}

// The rows of x quantized once per call (quantize.h), on the pool for more than a few rows:
// q [n][cols], d and s [n][nbp] (zero past the nb blocks), and, with_start, c [n][nbp][2] =
// -centre * the sum of q over each half block (the panel kernels' integer start) and, with_half_sums,
// h [n][nbp][2] = d * the sum of q over each half block (Q2_K's mins, one per 16 values).
struct QuantizedX {
  int8_t* q;
  float *d, *s;
  int32_t* c;
  float* h;
};
QuantizedX QuantizeX(const MatMulCall& c, int64_t nbp, bool with_start, int32_t centre,
                     bool with_half_sums = false) {
  const int64_t K = c.w->cols, nb = K / kQK, n = c.n;
  const size_t q_bytes = static_cast<size_t>((n * K + 63) / 64 * 64);
  const size_t per_block =
      2 * sizeof(float) + (with_start ? 2 * sizeof(int32_t) : 0) + (with_half_sums ? 2 * sizeof(float) : 0);
  uint8_t* xbuf = tls_x.Get(q_bytes + static_cast<size_t>(n * nbp) * per_block);
  QuantizedX x{reinterpret_cast<int8_t*>(xbuf), reinterpret_cast<float*>(xbuf + q_bytes), nullptr, nullptr,
               nullptr};
  x.s = x.d + n * nbp;
  if (with_start) x.c = reinterpret_cast<int32_t*>(x.s + n * nbp);
  if (with_start && with_half_sums) x.h = reinterpret_cast<float*>(x.c + 2 * n * nbp);
  constexpr int64_t kQuantRows = 8;
  const auto quantize = [&](int64_t i0, int64_t cnt) {
    QuantizeRowsImpl(c.x + i0 * c.ldx, cnt, c.ldx, K, x.q + i0 * K, x.d + i0 * nbp, nbp, x.s + i0 * nbp, nbp);
    for (int64_t i = i0; i < i0 + cnt; ++i) {
      std::fill(x.d + i * nbp + nb, x.d + (i + 1) * nbp, 0.0f);
      std::fill(x.s + i * nbp + nb, x.s + (i + 1) * nbp, 0.0f);
      if (!with_start) continue;
      for (int64_t h = 0; h < 2 * nb; ++h) {
        int32_t sum = 0;
        for (int64_t k = 0; k < kQK / 2; ++k) sum += x.q[i * K + h * (kQK / 2) + k];
        x.c[2 * i * nbp + h] = -centre * sum;
        if (x.h != nullptr) x.h[2 * i * nbp + h] = x.d[i * nbp + h / 2] * static_cast<float>(sum);
      }
      std::fill(x.c + 2 * (i * nbp + nb), x.c + 2 * (i + 1) * nbp, 0);
      if (x.h != nullptr) std::fill(x.h + 2 * (i * nbp + nb), x.h + 2 * (i + 1) * nbp, 0.0f);
    }
  };
  if (n <= kQuantRows) {
    quantize(0, n);
  } else {
    c.pool->Run(CeilDiv(n, kQuantRows), c.threads, [&](int64_t task, int) {
      const int64_t i0 = task * kQuantRows;
      quantize(i0, std::min(kQuantRows, n - i0));
    });
  }
  return x;
}

template <gguf::TensorType kType>
void QuantMatMul(const MatMulCall& c) {
  const WeightMatrix& w = *c.w;
  const int64_t K = w.cols, nb = K / kQK, n = c.n;
  // x quantized once (n = 1 on x86 goes through QuantMatVecGroup instead, see MatMulImpl).
  const int64_t nbp = CeilDiv(nb, matmul::kScalePad) * matmul::kScalePad;
  const QuantizedX qx = QuantizeX(c, nbp, false, 0);
  int8_t* xq = qx.q;
  float* xd = qx.d;
  float* xs = qx.s;

  const int64_t rb = RowsPerTask(w.rows, n), nc = n == 1 ? 1 : kChunkX;
  const int64_t n_row_tasks = CeilDiv(w.rows, rb), n_x_tasks = CeilDiv(n, nc);
  RunTasks(*c.pool, n_row_tasks * n_x_tasks, c.threads, n, [&](int64_t task, int) {
    const int64_t r_begin = task / n_x_tasks * rb, i_begin = task % n_x_tasks * nc;
    const int64_t r_count = std::min(rb, w.rows - r_begin), i_count = std::min(nc, n - i_begin);
    const uint8_t* rows = w.data + static_cast<size_t>(r_begin) * w.row_bytes;
    // Scratch: dw, mw [r_count][nbp] f32, the raw f16 scales, (portable) expanded rows.
    const size_t scale_bytes = static_cast<size_t>(2 * r_count * nbp) * sizeof(float);
    size_t bytes = scale_bytes + static_cast<size_t>(nb) * sizeof(uint16_t) + 64;
#if !ATTN_MATMUL_X86_INT8
    const size_t expanded_offset = bytes;
    bytes += static_cast<size_t>(r_count * K);
#endif
    uint8_t* buf = tls_task.Get(bytes);
    float* dw = reinterpret_cast<float*>(buf);
    float* mw = dw + r_count * nbp;
    uint16_t* tmp = reinterpret_cast<uint16_t*>(buf + scale_bytes);
    matmul::ExtractScales<kType>(rows, w.row_bytes, r_count, nb, nbp, tmp, dw, mw);
#if !ATTN_MATMUL_X86_INT8
    int8_t* wq = reinterpret_cast<int8_t*>(buf + expanded_offset);
    matmul::ExpandRows<kType>(rows, w.row_bytes, r_count, K, wq);
#endif
    ForEachTile<kTileRows, kTileCols>(r_count, i_count, [&]<int R, int C>(int64_t r, int64_t i) {
      const int64_t xi = i_begin + i;
      const matmul::QTileArgs a{dw + r * nbp,
                                mw + r * nbp,
                                xq + xi * K,
                                xd + xi * nbp,
                                xs + xi * nbp,
                                K,
                                nb,
                                nbp,
                                c.y + xi * c.ldy + r_begin + r,
                                c.ldy};
#if ATTN_MATMUL_X86_INT8
      matmul::TileQ<kType, R, C>(rows + static_cast<size_t>(r) * w.row_bytes, w.row_bytes, a);
#else
      matmul::TileQ<kType, R, C>(wq + r * K, a);
#endif
    });
  });
}

template <gguf::TensorType kType>
void FloatMatMul(const MatMulCall& c) {
  const WeightMatrix& w = *c.w;
  const int64_t n = c.n;
  const int64_t rb = RowsPerTask(w.rows, n), nc = n == 1 ? 1 : kChunkX;
  const int64_t n_row_tasks = CeilDiv(w.rows, rb), n_x_tasks = CeilDiv(n, nc);
  RunTasks(*c.pool, n_row_tasks * n_x_tasks, c.threads, n, [&](int64_t task, int) {
    const int64_t r_begin = task / n_x_tasks * rb, i_begin = task % n_x_tasks * nc;
    const int64_t r_count = std::min(rb, w.rows - r_begin), i_count = std::min(nc, n - i_begin);
    ForEachTile<kFloatTileRows, kFloatTileCols>(r_count, i_count, [&]<int R, int C>(int64_t r, int64_t i) {
      const int64_t xi = i_begin + i;
      matmul::TileF<kType, R, C>(w.data + static_cast<size_t>(r_begin + r) * w.row_bytes, w.row_bytes,
                                 c.x + xi * c.ldx, c.ldx, w.cols, c.y + xi * c.ldy + r_begin + r, c.ldy);
    });
  });
}

// Weights in the K formats of kquants.h (Q4_K, Q5_K, Q6_K) where no integer kernel takes them
// (targets without the x86 integer kernels; n > 1 on AVX-512 without VNNI): each task decodes its rows to
// float32 once and runs the float32 tiles on them.
thread_local std::vector<float> tls_rows;
void DecodedMatMul(const MatMulCall& c) {
  const WeightMatrix& w = *c.w;
  const int64_t n = c.n;
  const int64_t rb = RowsPerTask(w.rows, n), nc = n == 1 ? 1 : kChunkX;
  const int64_t n_row_tasks = CeilDiv(w.rows, rb), n_x_tasks = CeilDiv(n, nc);
  const size_t row_bytes = static_cast<size_t>(w.cols) * sizeof(float);
  RunTasks(*c.pool, n_row_tasks * n_x_tasks, c.threads, n, [&](int64_t task, int) {
    const int64_t r_begin = task / n_x_tasks * rb, i_begin = task % n_x_tasks * nc;
    const int64_t r_count = std::min(rb, w.rows - r_begin), i_count = std::min(nc, n - i_begin);
    tls_rows.resize(static_cast<size_t>(r_count * w.cols));
    float* rows = tls_rows.data();
    for (int64_t r = 0; r < r_count; ++r)
      kq::DecodeRow(w.type, w.data + static_cast<size_t>(r_begin + r) * w.row_bytes, rows + r * w.cols,
                    w.cols);
    const auto* base = reinterpret_cast<const uint8_t*>(rows);
    ForEachTile<kFloatTileRows, kFloatTileCols>(r_count, i_count, [&]<int R, int C>(int64_t r, int64_t i) {
      const int64_t xi = i_begin + i;
      matmul::TileF<gguf::TensorType::kF32, R, C>(base + static_cast<size_t>(r) * row_bytes, row_bytes,
                                                  c.x + xi * c.ldx, c.ldx, w.cols,
                                                  c.y + xi * c.ldy + r_begin + r, c.ldy);
    });
  });
}

#if ATTN_MATMUL_PANELS
// n > 1 on AVX-512 with AVX512_VNNI and on AVX2 (matmul_panel-inl.h): x quantized once, then W in passes of
// at most kPanelPassBytes of panels (1.4 bytes per weight): each pass rebuilds its rows into panels of 16
// (parallel over panels), then runs tasks of (panel, chunk of x rows). The passes bound the
// scratch memory: the 49152 x 576 output matrix of SmolLM2 in one pass would take 39 MB, a
// 128256 x 2048 one 360 MB.
thread_local GrowBuffer<uint8_t> tls_panels;  // the calling thread's panels, read by the pool
constexpr size_t kPanelPassBytes = size_t{4} << 20;

template <gguf::TensorType kType>
void PanelMatMul(const MatMulCall& c) {
  const WeightMatrix& w = *c.w;
  const int64_t K = w.cols, nb = K / kQK, n = c.n;
  const int64_t nbp = CeilDiv(nb, matmul::kScalePad) * matmul::kScalePad;
  const QuantizedX qx = QuantizeX(c, nbp, true, panel::kCentre<kType>, panel::kHalfMins<kType>);
  const panel::XRows xr{qx.q, qx.d, qx.s, qx.c, qx.h, K, nbp};

  const int64_t n_panels = CeilDiv(w.rows, panel::kPanelRows);
  const size_t panel_bytes = panel::PanelBytes(nb, panel::kHalfMins<kType>);
  const int64_t pass_panels =
      std::clamp<int64_t>(static_cast<int64_t>(kPanelPassBytes / panel_bytes), 1, n_panels);
  uint8_t* panels = tls_panels.Get(static_cast<size_t>(pass_panels) * panel_bytes);
  const auto panel_rows = [&](int64_t p) {
    return static_cast<int>(std::min<int64_t>(panel::kPanelRows, w.rows - p * panel::kPanelRows));
  };
  const int64_t n_x_tasks = CeilDiv(n, kChunkX);
  for (int64_t p0 = 0; p0 < n_panels; p0 += pass_panels) {
    const int64_t count = std::min(pass_panels, n_panels - p0);
    c.pool->Run(count, c.threads, [&](int64_t k, int) {
      const int64_t p = p0 + k;
      panel::BuildPanel<kType>(w.data + static_cast<size_t>(p * panel::kPanelRows) * w.row_bytes, w.row_bytes,
                               panel_rows(p), nb,
                               panel::PanelAt(panels + static_cast<size_t>(k) * panel_bytes, nb));
    });
    c.pool->Run(count * n_x_tasks, c.threads, [&](int64_t task, int) {
      const int64_t k = task / n_x_tasks, p = p0 + k, i_begin = task % n_x_tasks * kChunkX;
      const int64_t i_end = std::min(n, i_begin + kChunkX);
      const panel::Panel panel = panel::PanelAt(panels + static_cast<size_t>(k) * panel_bytes, nb);
      panel::PanelRows<kType>(panel, nb, xr, i_begin, i_end, panel_rows(p), c.y + p * panel::kPanelRows,
                              c.ldy);
    });
  }
}

// True when the panel kernels took the product.
bool PanelMatMulIfTaken(const MatMulCall& c) {
  if (c.n <= 1) return false;
  bool taken = false;
  WithIntegerType(c.w->type, [&]<gguf::TensorType kType>() {
    if constexpr (panel::kTakes<kType>) {
      if ((taken = panel::Enabled())) PanelMatMul<kType>(c);
    }
  });
  return taken;
}
#endif  // ATTN_MATMUL_PANELS

}  // namespace

#if ATTN_MATMUL_X86_INT8
// Prefetches the `bytes` of a weight block ahead of the reads (prefetch never faults).
HWY_INLINE void PrefetchBlock(const uint8_t* p, int64_t bytes) {
  for (int64_t line = 0; line < bytes; line += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p + line), _MM_HINT_T1);
}

HWY_INLINE float HalfAtF16c(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)));
}

// The int16 scales s[0] (low 128 bits' 8 lanes) and s[1] (high ones): the scales of a 32-value
// block whose halves are two 16-value sub-blocks, for vpmaddwd after vpmaddubsw.
HWY_INLINE __m256i ScalePair(const int16_t* s, __m256i spread) {
  int32_t both;
  std::memcpy(&both, s, 4);
  return _mm256_shuffle_epi8(_mm256_set1_epi32(both), spread);
}
HWY_INLINE __m256i ScalePairSpread() {
  return _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
                          2, 3, 2, 3);
}

// d times the 8 x-block scales of super-block sb, to broadcast one per 32 values.
HWY_INLINE void SuperBlockScales(float d, const float* xd, float* HWY_RESTRICT out) {
  _mm256_store_ps(out, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_loadu_ps(xd)));
}

// The 8 6-bit scales and 8 6-bit mins of a Q4_K / Q5_K super-block, from its 12 packed bytes
// (kquants.h): bytes 0-3 hold sc0-3 in their low 6 bits, bytes 4-7 m0-3 likewise; bytes 8-11 hold
// sc4-7 (low nibble) and m4-7 (high nibble), whose top 2 bits are the top bits of bytes 0-3 (sc)
// and 4-7 (m). Worked on as three 32-bit words, one byte per sub-block.
HWY_INLINE void UnpackScalesMins(const uint8_t* packed, uint8_t* HWY_RESTRICT sc, uint8_t* HWY_RESTRICT m) {
  uint32_t a, b, c;  // bytes 0-3, 4-7, 8-11
  std::memcpy(&a, packed, 4);
  std::memcpy(&b, packed + 4, 4);
  std::memcpy(&c, packed + 8, 4);
  constexpr uint32_t k6 = 0x3F3F3F3F, k4 = 0x0F0F0F0F, k2 = 0x03030303;
  const uint32_t sc_lo = a & k6, m_lo = b & k6;
  const uint32_t sc_hi = (c & k4) | (((a >> 6) & k2) << 4);
  const uint32_t m_hi = ((c >> 4) & k4) | (((b >> 6) & k2) << 4);
  std::memcpy(sc, &sc_lo, 4);
  std::memcpy(sc + 4, &sc_hi, 4);
  std::memcpy(m, &m_lo, 4);
  std::memcpy(m + 4, &m_hi, 4);
}

// Matrix-vector for Q4_K / Q5_K: each 32-value sub-block of a super-block is a Q4_1-like block
// (scale d * sc_j, min dmin * m_j; Q5_K adds the fifth bit, bit j of byte l of its 32 high-bit
// bytes, to value l) against one 32-value block of the quantized x: y = sum_j d sc_j dx_j
// (q_j . qx_j) - dmin m_j s_j, s_j the x block's sum. Per super-block the 8 scales and mins are
// unpacked at once and turned into the 8 products d sc_j dx_j (broadcast from memory, one per
// sub-block) and a vector of dmin m_j s_j (summed across super-blocks, subtracted at the end).
// R rows at a time share x; xd and xs are x's block scales and sums.
template <bool kFive, int R>
HWY_NOINLINE void RowsQ45K(const uint8_t* HWY_RESTRICT w, size_t row_bytes, const int8_t* HWY_RESTRICT xq,
                           const float* HWY_RESTRICT xd, const float* HWY_RESTRICT xs, int64_t nb,
                           float* HWY_RESTRICT y) {
  constexpr int64_t kBytes = kFive ? kquants::kQ5KBytes : kquants::kQ4KBytes;
  constexpr int64_t kNibbles = kFive ? 48 : 16;
  const size_t ahead = matmul::PrefetchOffset(row_bytes);
  const __m256i low = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  __m256 acc[R], acc_min[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps(), acc_min[r] = _mm256_setzero_ps();
  alignas(32) float scale[8];
  alignas(8) uint8_t sc8[8], m8[8];
  for (int64_t sb = 0; sb < nb / 8; ++sb) {
    const __m256 dx8 = _mm256_loadu_ps(xd + 8 * sb), sx8 = _mm256_loadu_ps(xs + 8 * sb);
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * row_bytes + sb * kBytes;
      PrefetchBlock(blk + ahead, kBytes);
      uint32_t dd;
      std::memcpy(&dd, blk, 4);
      const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dd)));
      UnpackScalesMins(blk + 4, sc8, m8);
      const __m256 scf =
          _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc8))));
      const __m256 mf =
          _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m8))));
      _mm256_store_ps(scale, _mm256_mul_ps(_mm256_mul_ps(_mm256_broadcastss_ps(dm), scf), dx8));
      acc_min[r] =
          _mm256_fmadd_ps(_mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dm)), mf), sx8, acc_min[r]);
      __m256i high = _mm256_setzero_si256();
      if constexpr (kFive) high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16));
      for (int g = 0; g < 4; ++g) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kNibbles + 32 * g));
        const __m256i q[2] = {_mm256_and_si256(v, low), _mm256_and_si256(_mm256_srli_epi16(v, 4), low)};
        for (int h = 0; h < 2; ++h) {
          const int j = 2 * g + h;
          const int64_t b = sb * 8 + j;
          __m256i u = q[h];
          if constexpr (kFive) {  // bit j of each byte to bit 4 (16-bit shifts: bit 0 of a byte is its own
                                  // bit j)
            u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, j), one), 4));
          }
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kQK));
          const __m256i dot = matmul::BlockDot<gguf::TensorType::kQ4_1>(u, xv);
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_broadcast_ss(scale + j), acc[r]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) y[r] = matmul::HorizontalSum(_mm256_sub_ps(acc[r], acc_min[r]));
}

// Matrix-vector for Q6_K: 32 values at a time, the quants made signed (q - 32, -32..31) so that
// vpmaddubsw takes |w| against x with w's sign (as for Q8_0; pairs stay below 2 * 32 * 127), and
// vpmaddwd multiplies the 16-bit pair sums of each 16-value half by its int8 scale: the int32 lanes
// are exactly sum sc (q - 32) qx, scaled once by d dx per 32 values. Per super-block the 16 scales
// are widened to 16 bits and the 8 products d dx_b formed at once (ScalePair and a broadcast load
// per 32 values).
template <int R>
HWY_NOINLINE void RowsQ6K(const uint8_t* HWY_RESTRICT w, size_t row_bytes, const int8_t* HWY_RESTRICT xq,
                          const float* HWY_RESTRICT xd, int64_t nb, float* HWY_RESTRICT y) {
  const size_t ahead = matmul::PrefetchOffset(row_bytes);
  const __m256i low = _mm256_set1_epi8(0x0F), two_bits = _mm256_set1_epi8(0x03),
                centre = _mm256_set1_epi8(32), spread = ScalePairSpread();
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  alignas(32) float ddx[8];
  alignas(32) int16_t sc16[16];
  for (int64_t sb = 0; sb < nb / 8; ++sb) {
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * row_bytes + sb * kquants::kQ6KBytes;
      PrefetchBlock(blk + ahead, kquants::kQ6KBytes);
      SuperBlockScales(HalfAtF16c(blk + 208), xd + 8 * sb, ddx);
      _mm256_store_si256(reinterpret_cast<__m256i*>(sc16),
                         _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192))));
      for (int h = 0; h < 2; ++h) {
        const __m256i ql[2] = {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h)),
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32))};
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
        for (int s = 0; s < 4; ++s) {
          const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(ql[s % 2], 4 * (s / 2)), low);
          const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * s), two_bits), 4);
          const __m256i wv = _mm256_sub_epi8(_mm256_or_si256(lo, hi), centre);
          const int j = 4 * h + s;
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + (sb * 8 + j) * kQK));
          const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
          const __m256i dot = _mm256_madd_epi16(pairs, ScalePair(sc16 + 2 * j, spread));
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_broadcast_ss(ddx + j), acc[r]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) y[r] = matmul::HorizontalSum(acc[r]);
}

// The activations of a matrix-vector product as the kernels of the formats below take them: xq
// [nb][32] int8, xd [nb] the blocks' scales, and (Q2_K) bsums [2 nb] the sums of qx over each 16 values.
struct MatVecX {
  const int8_t* xq;
  const float* xd;
  const int16_t* bsums;
};

// Matrix-vector for Q2_K: value 128c + 32j + l of a super-block is bits [2j, 2j + 2) of quant byte
// 32c + l, so each 32-value block of x meets one 32-byte load shifted by 2j. vpmaddubsw's 16-bit
// pair sums of q qx (at most 2 * 3 * 127) times the two sub-blocks' 4-bit scales in vpmaddwd give
// sum sc q qx exactly; the mins meet x's sums per 16 values (bsums) once per super-block, 8 blocks
// in one vpmaddwd: y = sum_b dx_b (d sum sc q qx - dmin sum m qx).
template <int R>
HWY_NOINLINE void RowsQ2K(const uint8_t* HWY_RESTRICT w, size_t row_bytes, const MatVecX& x, int64_t nb,
                          float* HWY_RESTRICT y) {
  const size_t ahead = matmul::PrefetchOffset(row_bytes);
  const __m256i three = _mm256_set1_epi8(3), spread = ScalePairSpread();
  const __m128i low4 = _mm_set1_epi8(15);
  __m256 acc[R], acc_min[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps(), acc_min[r] = _mm256_setzero_ps();
  alignas(32) float ddx[8];
  alignas(32) int16_t sc16[16];
  for (int64_t sb = 0; sb < nb / 8; ++sb) {
    const __m256 dx8 = _mm256_loadu_ps(x.xd + 8 * sb);
    const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsums + 16 * sb));
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * row_bytes + sb * kquants::kQ2KBytes;
      PrefetchBlock(blk + ahead, kquants::kQ2KBytes);
      const float d = HalfAtF16c(blk + 80), dmin = HalfAtF16c(blk + 82);
      const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk));
      _mm256_store_si256(reinterpret_cast<__m256i*>(sc16), _mm256_cvtepu8_epi16(_mm_and_si128(sc, low4)));
      const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), low4));
      acc_min[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bsums)),
                                   _mm256_mul_ps(_mm256_set1_ps(dmin), dx8), acc_min[r]);
      SuperBlockScales(d, x.xd + 8 * sb, ddx);
      for (int c = 0; c < 2; ++c) {
        const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * c));
        for (int j = 0; j < 4; ++j) {
          const int b = 4 * c + j;
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.xq + (sb * 8 + b) * kQK));
          const __m256i q = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * j), three);
          const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), ScalePair(sc16 + 2 * b, spread));
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_broadcast_ss(ddx + b), acc[r]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) y[r] = matmul::HorizontalSum(_mm256_sub_ps(acc[r], acc_min[r]));
}

// The 16 signed scales of a Q3_K block (kquants.h) as int16: low nibbles from bytes 0-7 (values
// 0-7: low halves, 8-15: high halves), two high bits each from bytes 8-11.
HWY_INLINE void Q3KScales(const uint8_t* sc, int16_t* HWY_RESTRICT out) {
  uint64_t lo8;
  uint32_t hi4;
  std::memcpy(&lo8, sc, 8);
  std::memcpy(&hi4, sc + 8, 4);
  const __m128i b = _mm_cvtsi64_si128(static_cast<int64_t>(lo8)), low4 = _mm_set1_epi8(15);
  const __m128i low = _mm_unpacklo_epi64(_mm_and_si128(b, low4), _mm_and_si128(_mm_srli_epi16(b, 4), low4));
  constexpr uint32_t kTwo = 0x03030303u;
  const __m128i high =
      _mm_setr_epi32(static_cast<int>(hi4 & kTwo), static_cast<int>((hi4 >> 2) & kTwo),
                     static_cast<int>((hi4 >> 4) & kTwo), static_cast<int>((hi4 >> 6) & kTwo));
  const __m128i s8 = _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(high, 4)), _mm_set1_epi8(32));
  _mm256_store_si256(reinterpret_cast<__m256i*>(out), _mm256_cvtepi8_epi16(s8));
}

// Matrix-vector for Q3_K: the quants as Q2_K's plus a third bit (bit 4c + j of high byte l), made
// signed (q - 4, -4..3) so that vpmaddubsw takes |w| against x with w's sign; vpmaddwd multiplies
// the pair sums by the sub-blocks' signed 6-bit scales: the int32 lanes are exactly
// sum (sc - 32) (q - 4) qx, scaled once by d dx per 32 values.
template <int R>
HWY_NOINLINE void RowsQ3K(const uint8_t* HWY_RESTRICT w, size_t row_bytes, const MatVecX& x, int64_t nb,
                          float* HWY_RESTRICT y) {
  const size_t ahead = matmul::PrefetchOffset(row_bytes);
  const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
  const __m256i spread = ScalePairSpread();
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  alignas(32) float ddx[8];
  alignas(32) int16_t sc16[16];
  for (int64_t sb = 0; sb < nb / 8; ++sb) {
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * row_bytes + sb * kquants::kQ3KBytes;
      PrefetchBlock(blk + ahead, kquants::kQ3KBytes);
      Q3KScales(blk + 96, sc16);
      SuperBlockScales(HalfAtF16c(blk + 108), x.xd + 8 * sb, ddx);
      const __m256i hv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
      for (int c = 0; c < 2; ++c) {
        const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32 + 32 * c));
        for (int j = 0; j < 4; ++j) {
          const int b = 4 * c + j;
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.xq + (sb * 8 + b) * kQK));
          const __m256i low = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * j), three);
          const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hv, 4 * c + j), one);
          const __m256i wv = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(high, 2)), four);
          const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
          const __m256i dot = _mm256_madd_epi16(pairs, ScalePair(sc16 + 2 * b, spread));
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_broadcast_ss(ddx + b), acc[r]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) y[r] = matmul::HorizontalSum(acc[r]);
}

// 2^(e - 128) for every E8M0 exponent byte e: MXFP4's block scale with its FP4 levels doubled.
const float* Mxfp4Scales() {
  static const auto table = [] {
    std::array<float, 256> t{};
    for (int e = 0; e < 256; ++e) t[static_cast<size_t>(e)] = std::ldexp(1.0f, e - 128);
    return t;
  }();
  return table.data();
}

// Matrix-vector for IQ4_NL / IQ4_XS / MXFP4: vpshufb looks the 16 levels up by nibble (16 bytes of
// nibbles hold values j and j + 16 of 32), vpmaddubsw takes |level| against x with the level's sign
// (pairs at most 2 * 127 * 127, below 2^15), and vpmaddwd sums the pairs times the block's integer
// scale (IQ4_XS: ls - 32; else 1): exact int32 lanes, scaled once per 32 values by d dx (IQ4_NL's
// float16 d) or 2^(e - 128) dx (MXFP4's E8M0 exponent byte e, its FP4 levels doubled: 0, 1, 2, 3,
// 4, 6, 8, 12 and their negatives).
template <gguf::TensorType kType, int R>
HWY_NOINLINE void RowsIq4(const uint8_t* HWY_RESTRICT w, size_t row_bytes, const MatVecX& x, int64_t nb,
                          float* HWY_RESTRICT y) {
  constexpr bool kXs = kType == gguf::TensorType::kIQ4_XS, kMx = kType == gguf::TensorType::kMXFP4;
  const size_t ahead = matmul::PrefetchOffset(row_bytes);
  const __m256i levels = _mm256_broadcastsi128_si256(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(kMx ? kquants::kMxfp4Levels : kquants::kIq4Levels)));
  const __m256i low = _mm256_set1_epi8(0x0F);
  const auto dot32 = [&](const uint8_t* nibbles, __m256i xv, __m256i scale) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(nibbles));
    const __m256i idx =
        _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1), low);
    const __m256i wv = _mm256_shuffle_epi8(levels, idx);
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, scale));
  };
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  if constexpr (kXs) {
    alignas(32) float ddx[8];
    for (int64_t sb = 0; sb < nb / 8; ++sb) {
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * row_bytes + sb * kquants::kIq4XsBytes;
        PrefetchBlock(blk + ahead, kquants::kIq4XsBytes);
        SuperBlockScales(HalfAtF16c(blk), x.xd + 8 * sb, ddx);
        for (int s = 0; s < 8; ++s) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.xq + (sb * 8 + s) * kQK));
          const __m256 dot =
              dot32(blk + 8 + 16 * s, xv, _mm256_set1_epi16(static_cast<int16_t>(kq::Iq4XsScale(blk, s))));
          acc[r] = _mm256_fmadd_ps(dot, _mm256_broadcast_ss(ddx + s), acc[r]);
        }
      }
    }
  } else {
    constexpr int64_t BB = kMx ? kquants::kMxfp4Bytes : kquants::kIq4NlBytes, kNib = kMx ? 1 : 2;
    const __m256i one16 = _mm256_set1_epi16(1);
    const float* e8m0 = Mxfp4Scales();
    for (int64_t b = 0; b < nb; ++b) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.xq + b * kQK));
      const float dx = x.xd[b];
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * row_bytes + b * BB;
        _mm_prefetch(reinterpret_cast<const char*>(blk + ahead), _MM_HINT_T1);  // never faults
        const float d = kMx ? e8m0[blk[0]] : HalfAtF16c(blk);
        acc[r] = _mm256_fmadd_ps(dot32(blk + kNib, xv, one16), _mm256_set1_ps(d * dx), acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) y[r] = matmul::HorizontalSum(acc[r]);
}

#if HWY_TARGET <= HWY_AVX3
// Matrix-vector for IQ4_NL and MXFP4 on AVX-512: two blocks per 512-bit register, x reordered as
// for RowsQ4PairsX (matmul-inl.h). AVX-512 has no vpsignb: x takes the level's sign by a masked
// negation (x is never -128) and vpmaddubsw multiplies |level|. Lanes 0-3 and 8-11 of the int32
// dot belong to block b, 4-7 and 12-15 to block b + 1; an odd last block goes through RowsIq4.
// IQ4_NL's block scale is a float16 before its 16 bytes of nibbles, MXFP4's an E8M0
// exponent byte (Mxfp4Scales).
template <gguf::TensorType kType, int R>
HWY_NOINLINE void RowsNl4Pairs(const uint8_t* HWY_RESTRICT w, size_t row_bytes, const int8_t* HWY_RESTRICT xp,
                               const MatVecX& x, int64_t nb, float* HWY_RESTRICT y) {
  constexpr bool kMx = kType == gguf::TensorType::kMXFP4;
  constexpr int64_t BB = kMx ? kquants::kMxfp4Bytes : kquants::kIq4NlBytes, kNib = kMx ? 1 : 2;
  const size_t ahead = matmul::PrefetchOffset(row_bytes);
  const float* e8m0 = Mxfp4Scales();
  const __m512i levels = _mm512_broadcast_i32x4(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(kMx ? kquants::kMxfp4Levels : kquants::kIq4Levels)));
  const __m512i low4 = _mm512_set1_epi8(0x0F), ones = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    const __m512i xv = _mm512_loadu_si512(xp + b * kQK);
    const __m128 dx =
        _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(x.xd + b)));  // [dx_b, dx_b+1]
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * row_bytes + b * BB;
      _mm_prefetch(reinterpret_cast<const char*>(blk + ahead), _MM_HINT_T1);  // never faults
      __m128 scale;
      if constexpr (kMx) {
        scale = _mm_setr_ps(e8m0[blk[0]], e8m0[blk[BB]], 0.0f, 0.0f);
      } else {
        uint16_t d0, d1;
        std::memcpy(&d0, blk, 2);
        std::memcpy(&d1, blk + BB, 2);
        scale = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(d0 | (uint32_t{d1} << 16))));
      }
      const __m128 prod = _mm_mul_ps(scale, dx);
      const __m256i nib = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kNib))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + BB + kNib)), 1);
      const __m512i idx = _mm512_and_si512(
          _mm512_inserti64x4(_mm512_castsi256_si512(nib), _mm256_srli_epi16(nib, 4), 1), low4);
      const __m512i wv = _mm512_shuffle_epi8(levels, idx);
      const __m512i xs = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), zero, xv);
      const __m512i dot = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(wv), xs), ones);
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot),
                               _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(prod)), acc[r]);
    }
  }
  float tail[R] = {};
  if (b < nb) {  // the odd last block, unpaired in xp
    const MatVecX last{xp + b * kQK, x.xd + b, nullptr};
    RowsIq4<kType, R>(w + b * BB, row_bytes, last, 1, tail);
  }
  for (int r = 0; r < R; ++r) {
    const __m256 halves =
        _mm256_add_ps(_mm512_castps512_ps256(acc[r]),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r]), 1)));
    y[r] = matmul::HorizontalSum(halves) + tail[r];
  }
}
#endif

// A few input rows (n <= kGroupRows) through several integer-block matrices: each x row is
// quantized once, and every row block of every matrix is a task of one pool job, so small products
// (K and V are 192 rows here) share the threads instead of each paying for a job of its own. A
// task applies each tile of weight rows to every x row in turn while the tile is in L1: the
// weights stream from memory once for all rows, and each row's result is its one-row result.
template <gguf::TensorType kType>
void QuantMatVecGroup(const MatMulGroupCall& g) {
  const int64_t K = g.ws[0]->cols, nb = K / kQK, n = g.n;
  // Per x row: xq, xp (xq reordered for RowsQ4PairsX) [kp], then xd, xs, xds [4 nb floats].
  const size_t kp = static_cast<size_t>((K + 63) / 64 * 64);
  const size_t per_row = 2 * kp + static_cast<size_t>(4 * nb) * sizeof(float);
  uint8_t* xbuf = tls_x.Get(static_cast<size_t>(n) * per_row);
  struct RowX {
    int8_t *xq, *xp;
    float *xd, *xs, *xds;
    MatVecX mx;
  };
  RowX xr[kGroupRows];
  static thread_local std::vector<int16_t> bsums;  // Q2_K: x's sums per 16 values
  if constexpr (kType == gguf::TensorType::kQ2_K) bsums.resize(static_cast<size_t>(2 * nb * n));
  for (int64_t i = 0; i < n; ++i) {
    uint8_t* base = xbuf + static_cast<size_t>(i) * per_row;
    RowX& r = xr[i];
    r.xq = reinterpret_cast<int8_t*>(base);
    r.xp = reinterpret_cast<int8_t*>(base + kp);
    r.xd = reinterpret_cast<float*>(base + 2 * kp);
    r.xs = r.xd + nb;
    r.xds = r.xs + nb;
    QuantizeRowsImpl(g.x + i * g.ldx, 1, K, K, r.xq, r.xd, nb, r.xs, nb);
    for (int64_t b = 0; b < nb; ++b) r.xds[2 * b] = r.xd[b], r.xds[2 * b + 1] = r.xs[b];
    r.mx = MatVecX{r.xq, r.xd, nullptr};
    if constexpr (kType == gguf::TensorType::kQ2_K) {
      int16_t* sums = bsums.data() + 2 * nb * i;
      for (int64_t h = 0; h < 2 * nb; ++h) {
        int sum = 0;
        for (int l = 0; l < 16; ++l) sum += r.xq[16 * h + l];
        sums[h] = static_cast<int16_t>(sum);
      }
      r.mx.bsums = sums;
    }
  }
#if HWY_TARGET <= HWY_AVX3
  constexpr bool kPairs = kType == gguf::TensorType::kQ4_0 || kType == gguf::TensorType::kQ4_1 ||
                          kType == gguf::TensorType::kIQ4_NL || kType == gguf::TensorType::kMXFP4;
  if constexpr (kPairs) {
    for (int64_t i = 0; i < n; ++i) matmul::PairActivations(xr[i].xq, nb, xr[i].xp);
  }
#endif
  int64_t first_task[9] = {0};
  double bytes = 0.0;
  for (int k = 0; k < g.count; ++k) {
    const WeightMatrix& w = *g.ws[k];
    first_task[k + 1] = first_task[k] + CeilDiv(w.rows, RowsPerTask(w.rows, 1));
    bytes += static_cast<double>(w.row_bytes) * static_cast<double>(w.rows);
  }
  const int threads = ThreadsFor(MatVecMicros(bytes) * static_cast<double>(n), g.threads, *g.pool);
#if HWY_TARGET <= HWY_AVX3
  const bool vnni = VnniEnabled();  // vpdpbusd in RowsQ4PairsX / RowsQX (the same results)
#endif
  RunTasks(*g.pool, first_task[g.count], threads, 1, [&](int64_t task, int) {
    int k = 0;
    while (task >= first_task[k + 1]) ++k;
    const WeightMatrix& w = *g.ws[k];
    const int64_t rb = RowsPerTask(w.rows, 1);
    const int64_t r_begin = (task - first_task[k]) * rb, r_count = std::min(rb, w.rows - r_begin);
    ForEachTile<kVectorRows, 1>(r_count, 1, [&]<int R, int C>(int64_t r, int64_t) {
      const uint8_t* rows = w.data + static_cast<size_t>(r_begin + r) * w.row_bytes;
      int64_t i = 0;
#if HWY_TARGET <= HWY_AVX3
      if constexpr (kType == gguf::TensorType::kQ4_0 || kType == gguf::TensorType::kQ4_1) {
        for (; i + 2 <= n; i += 2) {  // two x rows per pass over the tile's blocks
          const int8_t* xps[2] = {xr[i].xp, xr[i + 1].xp};
          const float* xdss[2] = {xr[i].xds, xr[i + 1].xds};
          float* ys[2] = {g.ys[k] + i * g.ldys[k] + r_begin + r, g.ys[k] + (i + 1) * g.ldys[k] + r_begin + r};
          if (vnni) {
            matmul::RowsQ4PairsX<kType, R, 2, true>(rows, w.row_bytes, xps, xdss, nb, ys);
          } else {
            matmul::RowsQ4PairsX<kType, R, 2>(rows, w.row_bytes, xps, xdss, nb, ys);
          }
        }
      }
#endif
      if constexpr (kType == gguf::TensorType::kQ8_0 || kType == gguf::TensorType::kQ5_0 ||
                    kType == gguf::TensorType::kQ5_1 ||
                    (HWY_TARGET > HWY_AVX3 &&
                     (kType == gguf::TensorType::kQ4_0 || kType == gguf::TensorType::kQ4_1))) {
        for (; i + 2 <= n; i += 2) {  // RowsQX's types: two x rows per pass as well
          const int8_t* xqs[2] = {xr[i].xq, xr[i + 1].xq};
          const float* xdss[2] = {xr[i].xds, xr[i + 1].xds};
          float* ys[2] = {g.ys[k] + i * g.ldys[k] + r_begin + r, g.ys[k] + (i + 1) * g.ldys[k] + r_begin + r};
#if HWY_TARGET <= HWY_AVX3
          if (vnni) {
            matmul::RowsQX<kType, R, 2, true>(rows, w.row_bytes, xqs, xdss, nb, ys);
            continue;
          }
#endif
          matmul::RowsQX<kType, R, 2>(rows, w.row_bytes, xqs, xdss, nb, ys);
        }
      }
      for (; i < n; ++i) {
        const RowX& x = xr[i];
        float* y = g.ys[k] + i * g.ldys[k] + r_begin + r;
#if HWY_TARGET <= HWY_AVX3
        if constexpr (kType == gguf::TensorType::kIQ4_NL || kType == gguf::TensorType::kMXFP4) {
          RowsNl4Pairs<kType, R>(rows, w.row_bytes, x.xp, x.mx, nb, y);
          continue;
        } else if constexpr (kPairs) {
          if (vnni) {
            matmul::RowsQ4PairsX<kType, R, 1, true>(rows, w.row_bytes, &x.xp, &x.xds, nb, &y);
          } else {
            matmul::RowsQ4PairsX<kType, R, 1>(rows, w.row_bytes, &x.xp, &x.xds, nb, &y);
          }
          continue;
        }
#endif
        if constexpr (kType == gguf::TensorType::kQ4_K || kType == gguf::TensorType::kQ5_K) {
          RowsQ45K<kType == gguf::TensorType::kQ5_K, R>(rows, w.row_bytes, x.xq, x.xd, x.xs, nb, y);
        } else if constexpr (kType == gguf::TensorType::kQ6_K) {
          RowsQ6K<R>(rows, w.row_bytes, x.xq, x.xd, nb, y);
        } else if constexpr (kType == gguf::TensorType::kQ2_K) {
          RowsQ2K<R>(rows, w.row_bytes, x.mx, nb, y);
        } else if constexpr (kType == gguf::TensorType::kQ3_K) {
          RowsQ3K<R>(rows, w.row_bytes, x.mx, nb, y);
        } else if constexpr (kType == gguf::TensorType::kIQ4_NL || kType == gguf::TensorType::kIQ4_XS ||
                             kType == gguf::TensorType::kMXFP4) {
          RowsIq4<kType, R>(rows, w.row_bytes, x.mx, nb, y);
        } else {
#if HWY_TARGET <= HWY_AVX3
          if (vnni) {
            matmul::RowsQX<kType, R, 1, true>(rows, w.row_bytes, &x.xq, &x.xds, nb, &y);
            continue;
          }
#endif
          matmul::RowsQX<kType, R, 1>(rows, w.row_bytes, &x.xq, &x.xds, nb, &y);
        }
      }
    });
  });
}
#endif

// Returns false when this target has no grouped path for the type (the caller then runs the
// products one by one).
bool MatVecGroupImpl(const MatMulGroupCall& g) {
#if ATTN_MATMUL_X86_INT8
  return WithIntegerType(g.ws[0]->type, [&]<gguf::TensorType kType>() { QuantMatVecGroup<kType>(g); });
#else
  (void)g;
  return false;
#endif
}

void MatMulImpl(const MatMulCall& call) {
  MatMulCall c = call;
  c.threads = UsefulThreads(call);
  if (c.n <= kGroupRows) {  // a matrix-vector product (or a few) is a group of one
    const MatMulGroupCall g{&c.w, &c.y, &c.ldy, 1, c.x, c.n, c.ldx, c.pool, c.threads};
    if (MatVecGroupImpl(g)) return;
  }
#if ATTN_MATMUL_PANELS
  if (PanelMatMulIfTaken(c)) return;
#endif
  switch (c.w->type) {
    case gguf::TensorType::kF32:
      return FloatMatMul<gguf::TensorType::kF32>(c);
    case gguf::TensorType::kF16:
      return FloatMatMul<gguf::TensorType::kF16>(c);
    case gguf::TensorType::kBF16:
      return FloatMatMul<gguf::TensorType::kBF16>(c);
    case gguf::TensorType::kQ4_0:
      return QuantMatMul<gguf::TensorType::kQ4_0>(c);
    case gguf::TensorType::kQ4_1:
      return QuantMatMul<gguf::TensorType::kQ4_1>(c);
    case gguf::TensorType::kQ8_0:
      return QuantMatMul<gguf::TensorType::kQ8_0>(c);
    case gguf::TensorType::kQ5_0:
      return QuantMatMul<gguf::TensorType::kQ5_0>(c);
    case gguf::TensorType::kQ5_1:
      return QuantMatMul<gguf::TensorType::kQ5_1>(c);
    case gguf::TensorType::kQ4_K:
    case gguf::TensorType::kQ5_K:
    case gguf::TensorType::kQ6_K:
    case gguf::TensorType::kQ2_K:
    case gguf::TensorType::kQ3_K:
    case gguf::TensorType::kIQ4_NL:
    case gguf::TensorType::kIQ4_XS:
    case gguf::TensorType::kMXFP4:  // more than one x row without the VNNI panels: decoded
      return DecodedMatMul(c);
    default:
      return;  // rejected by MatMul
  }
}

void QuantizeRows(const float* x, int64_t n, int64_t ldx, int64_t cols, int8_t* q, float* d, float* s) {
  QuantizeRowsImpl(x, n, ldx, cols, q, d, cols / kQK, s, cols / kQK);
}

const char* MatMulTarget() {
#if ATTN_MATMUL_PANELS && HWY_TARGET <= HWY_AVX3
  if (VnniEnabled()) return "AVX3_VNNI";
#endif
  return hwy::TargetName(HWY_TARGET);
}

bool DecodeRowImpl(gguf::TensorType type, const uint8_t* src, float* dst, int64_t n) {
  return kq::DecodeRow(type, src, dst, n);
}

}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn {
namespace kernels {
HWY_EXPORT(MatMulImpl);
HWY_EXPORT(MatVecGroupImpl);
HWY_EXPORT(QuantizeRows);
HWY_EXPORT(MatMulTarget);
HWY_EXPORT(DecodeRowImpl);

namespace {
// Detected once (AVX512_VNNI: CPUID leaf 7 subleaf 0, ECX bit 11), before any test restricts
// Highway's targets.
const bool vnni_here = Avx3WithCpuidBit(7, 0, 2, 11);
std::atomic<bool> vnni_on{vnni_here};
}  // namespace

bool VnniAvailable() { return vnni_here; }
bool VnniEnabled() { return vnni_on.load(std::memory_order_relaxed); }
void SetVnniEnabled(bool on) { vnni_on.store(on && vnni_here, std::memory_order_relaxed); }

bool DecodeRow(gguf::TensorType type, const uint8_t* src, float* dst, int64_t n) {
  return HWY_DYNAMIC_DISPATCH(DecodeRowImpl)(type, src, dst, n);
}
}  // namespace kernels

void MatMul(const WeightMatrix& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy,
            ThreadPool& pool, int threads) {
  if (w.data == nullptr) throw Error("MatMul: weight data is null");
  try {
    const size_t row_bytes = RowBytes(w.type, w.cols);
    if (w.row_bytes != row_bytes) {
      throw Error("row_bytes = " + std::to_string(w.row_bytes) + " (expected " + std::to_string(row_bytes) +
                  ")");
    }
  } catch (const Error& e) {
    throw Error(std::string("MatMul: weight: ") + e.what(), e.kind());
  }
  if (w.rows <= 0) throw Error("MatMul: weight rows = " + std::to_string(w.rows) + " (must be > 0)");
  if (n < 0) throw Error("MatMul: n = " + std::to_string(n) + " (must be >= 0)");
  if (n == 0) return;
  if (x == nullptr) throw Error("MatMul: x is null");
  if (y == nullptr) throw Error("MatMul: y is null");
  if (ldx < w.cols) {
    throw Error("MatMul: ldx = " + std::to_string(ldx) + " (must be >= cols = " + std::to_string(w.cols) +
                ")");
  }
  if (ldy < w.rows) {
    throw Error("MatMul: ldy = " + std::to_string(ldy) + " (must be >= rows = " + std::to_string(w.rows) +
                ")");
  }
  const kernels::MatMulCall call{&w, x, n, ldx, y, ldy, &pool, std::max(threads, 0)};
  HWY_DYNAMIC_DISPATCH(kernels::MatMulImpl)(call);
}

void MatMulShared(std::span<const WeightMatrix* const> ws, const float* x, int64_t n, int64_t ldx,
                  std::span<float* const> ys, ThreadPool& pool, int threads) {
  if (ws.size() != ys.size() || ws.empty() || ws.size() > 8) {
    throw Error("MatMulShared: " + std::to_string(ws.size()) + " weights and " + std::to_string(ys.size()) +
                " outputs (must be equal, 1 to 8)");
  }
  bool grouped = n >= 1 && n <= kernels::kGroupRows;
  for (size_t k = 0; k < ws.size(); ++k) {
    if (ws[k] == nullptr) throw Error("MatMulShared: weight " + std::to_string(k) + " is null");
    grouped = grouped && ws[k]->type == ws[0]->type && ws[k]->cols == ws[0]->cols;
  }
  if (grouped) {
    // The checks of MatMul, for each product (ldy = rows: outputs are contiguous rows).
    for (size_t k = 0; k < ws.size(); ++k) {
      if (ws[k]->data == nullptr || ys[k] == nullptr || x == nullptr || ws[k]->rows <= 0 ||
          ws[k]->row_bytes != RowBytes(ws[k]->type, ws[k]->cols) || ldx < ws[k]->cols) {
        grouped = false;  // let MatMul raise the precise error
      }
    }
  }
  if (grouped) {
    int64_t ldys[8];
    for (size_t k = 0; k < ws.size(); ++k) ldys[k] = ws[k]->rows;
    const kernels::MatMulGroupCall call{ws.data(), ys.data(), ldys,  static_cast<int>(ws.size()), x,
                                        n,         ldx,       &pool, std::max(threads, 0)};
    if (HWY_DYNAMIC_DISPATCH(kernels::MatVecGroupImpl)(call)) return;
  }
  for (size_t k = 0; k < ws.size(); ++k) {
    if (ws[k] == nullptr) continue;
    MatMul(*ws[k], x, n, ldx, ys[k], ws[k]->rows, pool, threads);
  }
}

void QuantizeRowsQ8(const float* x, int64_t n, int64_t ldx, int64_t cols, int8_t* q, float* d, float* s) {
  if (cols <= 0 || cols % kQ8Block != 0) {
    throw Error("QuantizeRowsQ8: cols = " + std::to_string(cols) + " (must be a positive multiple of 32)");
  }
  if (n <= 0) return;
  if (x == nullptr || q == nullptr || d == nullptr || s == nullptr)
    throw Error("QuantizeRowsQ8: null buffer");
  if (ldx < cols) throw Error("QuantizeRowsQ8: ldx = " + std::to_string(ldx) + " (must be >= cols)");
  HWY_DYNAMIC_DISPATCH(kernels::QuantizeRows)(x, n, ldx, cols, q, d, s);
}

const char* MatMulTargetName() { return HWY_DYNAMIC_DISPATCH(kernels::MatMulTarget)(); }

}  // namespace attn
#endif
