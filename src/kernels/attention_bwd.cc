// The fused attention backward kernel (FlashAttention-2's algorithm on CPU vector lanes).
//
// With P = 2^(S2 - lse2) recomputed per tile from the forward's LSE (S2: the scaled, capped,
// masked scores in log2 units), D_i = dout_i . out_i, dP = dout V^T and dS = P (dP - D), a task
// owns a range of key tiles (BK keys each) of one KV head and, per tile, walks every block of
// BQ query rows that sees it (all query heads of the GQA group):
//   S, dP  [BQ x BK]                          (keys in lanes)
//   dV += P^T dout,  dK += dS^T Q             (the tile's [BK x D] accumulators, written at its end)
//   dQ += dS K                                (into float32 rows owned by the task's key split)
// Determinism without atomics: the number of key splits comes from the shapes only (enough
// tasks for the threads), each split has its own dQ rows, and a last step sums the splits in
// order; every output element has one owner and a fixed order of additions, so results are
// bit-identical for every thread count. Where the split rows would take too much memory (huge
// Sq x heads), two passes instead: dK, dV per key tile, then dQ per block of query rows, both
// recomputing P and dS (7 products instead of 5). Nothing of size Sq x Sk exists beyond one
// BQ x BK tile per thread.
//
// Before that, one packing step converts every input to float32 in the layouts the products
// read: Q (pre-scaled) and dout row-major, padded to Dp = D rounded up to lanes; K and V
// transposed per key tile ([D][BK], the lane-contiguous operand of S and dP); K row-major padded
// (the operand of dQ); D_i and lse2 per row. Every product is one register-tiled micro-kernel,
// C[R rows, V vectors] (+)= sum_t A(i, t) B[t, :], A broadcast from any layout.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "core/aligned.h"
#include "core/thread_pool.h"
#include "kernels/attention_bwd_params.h"
#include "kernels/attention_output.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention_bwd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace {

// Register tiles (rows x vectors of accumulators, plus V operand vectors and one broadcast, within
// the target's vector registers). kKey*: products whose columns are keys (S, dP, dK^T, dV^T);
// kDim*: dQ, whose columns are head dims. BK = kKeyVecs * lanes * kKeyChunks keys per tile.
#if HWY_TARGET <= HWY_AVX3
#ifndef ATTN_BWD3_KEY_ROWS    // tuning overrides (define all five): -DATTN_BWD3_KEY_ROWS=.. etc.
#define ATTN_BWD3_KEY_ROWS 6  // 24 + 4 + 1 of 32 zmm
#define ATTN_BWD3_KEY_VECS 4
// dK, dV and dQ in 4 x 4 tiles: their row counts (64 keys, 60 query rows) split into 4s without
// an edge tile, and one zmm FMA per cycle on this CPU keeps 16 accumulators busy. Against 6 x 4:
// 155-162 -> 168-175 GFLOP/s at S512 D64, 166-178 -> 177-191 at S1024 D128, 158/150 -> 162/161
// at S1024 causal, S2048 causal 179-180 -> 176 (2026-12-03, alternating builds).
#define ATTN_BWD3_DIM_ROWS 4
#define ATTN_BWD3_DIM_VECS 4
#define ATTN_BWD3_KEY_CHUNKS 1  // BK = 64
#endif
constexpr int kKeyRows = ATTN_BWD3_KEY_ROWS, kKeyVecs = ATTN_BWD3_KEY_VECS;
constexpr int kDimRows = ATTN_BWD3_DIM_ROWS, kDimVecs = ATTN_BWD3_DIM_VECS;
constexpr int kKeyChunks = ATTN_BWD3_KEY_CHUNKS;
#else
// 6 x 2 beats the forward's 4 x 3 here: 12 accumulators leave 4 registers free (no spill), and
// a micro-benchmark of these products on this machine's AVX2 gave 80-90 against 55-65 GFLOP/s
// per core (fp32 FMA peak ~95).
#ifndef ATTN_BWD_KEY_ROWS  // tuning overrides (define all five): -DATTN_BWD_KEY_ROWS=.. etc.
#define ATTN_BWD_KEY_ROWS 6
#define ATTN_BWD_KEY_VECS 2
#define ATTN_BWD_DIM_ROWS 6
#define ATTN_BWD_DIM_VECS 2
#define ATTN_BWD_KEY_CHUNKS 4
#endif
constexpr int kKeyRows = ATTN_BWD_KEY_ROWS, kKeyVecs = ATTN_BWD_KEY_VECS;  // 12 + 2 + 1 of 16 ymm
constexpr int kDimRows = ATTN_BWD_DIM_ROWS, kDimVecs = ATTN_BWD_DIM_VECS;
constexpr int kKeyChunks = ATTN_BWD_KEY_CHUNKS;  // BK = 64 (AVX2)
#endif
#ifndef ATTN_BWD_QUERY_BLOCK
#define ATTN_BWD_QUERY_BLOCK 60
#endif
// Query rows per step over a key tile: a multiple of the 6-row register tiles.
constexpr int64_t kQueryBlock = ATTN_BWD_QUERY_BLOCK;
constexpr int64_t kMinTasks = 16;           // key splits make at least this many tasks, where there are keys
constexpr int64_t kChunkBytes = 512 << 10;  // key tiles processed together: about half of L2

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// C[i, :] (+)= sum_{t < T} A(i, t) B[t, :] for R rows and V vectors of columns. A(i, t) is read
// by broadcast from a[i * a_i + t * a_t] (any layout); B rows are b + t * b_t, lane-aligned.
template <int R, int V, bool kAdd>
HWY_INLINE void Tile(DF d, const float* HWY_RESTRICT a, int64_t a_i, int64_t a_t, const float* HWY_RESTRICT b,
                     int64_t b_t, int64_t T, float* HWY_RESTRICT c, int64_t c_i) {
  const int64_t N = hn::Lanes(d);
  VF acc[R][V];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) acc[i][v] = kAdd ? hn::Load(d, c + i * c_i + v * N) : hn::Zero(d);
  for (int64_t t = 0; t < T; ++t) {
    VF bv[V];
    for (int v = 0; v < V; ++v) bv[v] = hn::Load(d, b + t * b_t + v * N);
    for (int i = 0; i < R; ++i) {
      const VF ab = hn::Set(d, a[i * a_i + t * a_t]);
      for (int v = 0; v < V; ++v) acc[i][v] = hn::MulAdd(ab, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) hn::Store(acc[i][v], d, c + i * c_i + v * N);
}

// Tile<rows, vecs> for rows in [1, R] and vecs in [1, V] (the edges of a product).
template <int R, int V, bool kAdd>
void TileRows(int rows, DF d, const float* a, int64_t a_i, int64_t a_t, const float* b, int64_t b_t,
              int64_t T, float* c, int64_t c_i) {
  if constexpr (R >= 1) {
    if (rows == R) return Tile<R, V, kAdd>(d, a, a_i, a_t, b, b_t, T, c, c_i);
    TileRows<R - 1, V, kAdd>(rows, d, a, a_i, a_t, b, b_t, T, c, c_i);
  }
}
template <int R, int V, bool kAdd>
void TileEdge(int rows, int vecs, DF d, const float* a, int64_t a_i, int64_t a_t, const float* b, int64_t b_t,
              int64_t T, float* c, int64_t c_i) {
  if constexpr (V >= 1) {
    if (vecs == V) return TileRows<R, V, kAdd>(rows, d, a, a_i, a_t, b, b_t, T, c, c_i);
    TileEdge<R, V - 1, kAdd>(rows, vecs, d, a, a_i, a_t, b, b_t, T, c, c_i);
  }
}

// C[rows, cols] (+)= A[rows, T] B[T, cols]; cols is a multiple of the lane count. Column panels
// outermost, so one panel of B (T x V vectors) stays in L1 while every row block passes over it.
template <int R, int V, bool kAdd>
void Gemm(DF d, int64_t rows, int64_t cols, const float* a, int64_t a_i, int64_t a_t, const float* b,
          int64_t b_t, int64_t T, float* c, int64_t c_i) {
  const int64_t N = hn::Lanes(d);
  for (int64_t c0 = 0; c0 < cols; c0 += V * N) {
    const int vecs = static_cast<int>(std::min<int64_t>(V, (cols - c0) / N));
    int64_t r0 = 0;
    if (vecs == V) {
      for (; r0 + R <= rows; r0 += R)
        Tile<R, V, kAdd>(d, a + r0 * a_i, a_i, a_t, b + c0, b_t, T, c + r0 * c_i + c0, c_i);
    }
    for (; r0 < rows; r0 += R) {
      const int rr = static_cast<int>(std::min<int64_t>(R, rows - r0));
      TileEdge<R, V, kAdd>(rr, vecs, d, a + r0 * a_i, a_i, a_t, b + c0, b_t, T, c + r0 * c_i + c0, c_i);
    }
  }
}

// C[rows, cols] += A B as Gemm<R, V, true> does, with the inner index of each tile of R rows
// limited to range(r0, rr) = [t0, t1): the t outside contribute zero there (keys a row does not
// see, rows a key is not seen by), so they are skipped, and the sums are Gemm's bit for bit.
template <int R, int V, class Range>
void GemmRanged(DF d, int64_t rows, int64_t cols, const float* a, int64_t a_i, int64_t a_t, const float* b,
                int64_t b_t, float* c, int64_t c_i, const Range& range) {
  const int64_t N = hn::Lanes(d);
  for (int64_t r0 = 0; r0 < rows; r0 += R) {
    const int rr = static_cast<int>(std::min<int64_t>(R, rows - r0));
    const auto [t0, t1] = range(r0, rr);
    if (t1 <= t0) continue;
    for (int64_t c0 = 0; c0 < cols; c0 += V * N) {
      const int vecs = static_cast<int>(std::min<int64_t>(V, (cols - c0) / N));
      const float* at = a + r0 * a_i + t0 * a_t;
      const float* bt = b + t0 * b_t + c0;
      float* ct = c + r0 * c_i + c0;
      if (rr == R && vecs == V) {
        Tile<R, V, true>(d, at, a_i, a_t, bt, b_t, t1 - t0, ct, c_i);
      } else {
        TileEdge<R, V, true>(rr, vecs, d, at, a_i, a_t, bt, b_t, t1 - t0, ct, c_i);
      }
    }
  }
}

// The packed float32 inputs (see the top of the file), shared by both passes.
struct Workspace {
  int64_t BK, n_tiles, Dp;
  int64_t chunk_tiles;  // key tiles whose dK, dV accumulate together (see KeyTiles)
  float q_scale;        // Q is stored times this: scale * log2(e), or scale under softcap
  float* qp;            // [B][Hq][Sq][Dp], zero beyond D
  float* dop;           // [B][Hq][Sq][Dp], zero beyond D
  float* dvec;          // [B][Hq][Sq]  D_i = dout_i . out_i
  float* lse2;          // [B][Hq][Sq]  lse * log2(e); +inf for rows without keys (P = 0)
  float* kt;            // [B][Hkv][n_tiles][D][BK], zero beyond Sk
  float* vt;            // [B][Hkv][n_tiles][D][BK]
  float* kp;            // [B][Hkv][n_tiles * BK][Dp], zero beyond Sk and D
};

// One thread's tiles for a block of query rows against one key tile.
struct Tiles {
  float* s;     // [BQ][BK] scores, then P
  float* ds;    // [BQ][BK] dP, then dS (times 1 - tanh^2 under softcap)
  float* cap;   // [BQ][BK] 1 - tanh^2 (softcap only)
  float* acc;   // dK, dV [BK][Dp] each per tile of a chunk; or dQ [BQ][Dp] and one row [Dp]
  int32_t* lo;  // [BQ] visible keys of each row, relative to the tile (empty: lo > hi)
  int32_t* hi;
};

Tiles MakeTiles(GrowBuffer<float>& scratch, const Workspace& w) {
  const int64_t BK = w.BK, BQ = kQueryBlock;
  const int64_t acc = std::max(2 * w.chunk_tiles * BK * w.Dp, BQ * w.Dp + w.Dp);
  float* f = scratch.Get(3 * BQ * BK + acc + 2 * BQ + 64);
  Tiles t;
  t.s = f, f += BQ * BK;
  t.ds = f, f += BQ * BK;
  t.cap = f, f += BQ * BK;
  t.acc = f, f += acc;
  t.lo = reinterpret_cast<int32_t*>(f), f += BQ;
  t.hi = reinterpret_cast<int32_t*>(f);
  return t;
}

// How much of a key tile a block of query rows sees.
enum class Seen { kNone, kPart, kWhole };

// The keys [lo, hi + 1) of the tile that rows [r0, r0 + n) see between them (t.lo / t.hi).
std::pair<int64_t, int64_t> KeysOfRows(const Tiles& t, int64_t BK, int64_t r0, int n) {
  int32_t lo = static_cast<int32_t>(BK), hi = -1;
  for (int64_t r = r0; r < r0 + n; ++r) lo = std::min(lo, t.lo[r]), hi = std::max(hi, t.hi[r]);
  return {lo, hi + 1};
}

// P and dS of query rows [q0, q0 + nr) of head h against key tile `tile`, into t.s and t.ds
// (row stride BK; keys beyond the tile's visible ones get P = dS = 0), and each row's visible
// keys into t.lo / t.hi. kNone when no row sees a key of the tile (nothing computed), kWhole
// when every row sees all of its keys.
Seen ProbsAndGrads(const BackwardParams& bp, const Workspace& w, int64_t b, int64_t h, int64_t q0, int64_t nr,
                   int64_t tile, const Tiles& t) {
  const AttentionParams& p = bp.fwd;
  const DF d;
  const hn::RebindToSigned<DF> di;
  const int64_t N = hn::Lanes(d);
  const int64_t D = p.head_dim, BK = w.BK, j0 = tile * BK;
  const int64_t kvh = h / p.group;

  // 1. Visible keys of each row, relative to the tile.
  bool any = false, full = true;
  for (int64_t r = 0; r < nr; ++r) {
    int64_t lo, hi;
    p.KeyRange(b, q0 + r, &lo, &hi);
    lo = std::max<int64_t>(lo - j0, 0);
    hi = std::min<int64_t>(hi - j0, BK - 1);
    if (lo > hi) lo = BK, hi = -1;
    t.lo[r] = static_cast<int32_t>(lo), t.hi[r] = static_cast<int32_t>(hi);
    any = any || lo <= hi;
    full = full && lo == 0 && hi == BK - 1;
  }
  if (!any) return Seen::kNone;

  // 2. S = Q K^T (Q pre-scaled) and dP = dout V^T for the tile.
  const int64_t row0 = (b * p.n_heads + h) * p.seq_q + q0;
  const float* qp = w.qp + row0 * w.Dp;
  const float* dop = w.dop + row0 * w.Dp;
  const int64_t tile_off = ((b * p.n_kv_heads + kvh) * w.n_tiles + tile) * D * BK;
  if (full) {
    Gemm<kKeyRows, kKeyVecs, false>(d, nr, BK, qp, w.Dp, 1, w.kt + tile_off, BK, D, t.s, BK);
    Gemm<kKeyRows, kKeyVecs, false>(d, nr, BK, dop, w.Dp, 1, w.vt + tile_off, BK, D, t.ds, BK);
  } else {
    // A tile on the edge of what the rows see (the causal diagonal, a window's edges, the end of
    // a kv_len): per block of rows, only the lane vectors holding keys some row of it sees. The
    // other entries are left as they were and masked below.
    for (int64_t r0 = 0; r0 < nr; r0 += kKeyRows) {
      const int64_t rr = std::min<int64_t>(kKeyRows, nr - r0);
      const auto [lo, end] = KeysOfRows(t, BK, r0, static_cast<int>(rr));
      if (lo >= end) continue;
      const int64_t v0 = lo / N, cols = ((end - 1) / N + 1 - v0) * N;
      Gemm<kKeyRows, kKeyVecs, false>(d, rr, cols, qp + r0 * w.Dp, w.Dp, 1, w.kt + tile_off + v0 * N, BK, D,
                                      t.s + r0 * BK + v0 * N, BK);
      Gemm<kKeyRows, kKeyVecs, false>(d, rr, cols, dop + r0 * w.Dp, w.Dp, 1, w.vt + tile_off + v0 * N, BK, D,
                                      t.ds + r0 * BK + v0 * N, BK);
    }
  }

  // 3. Per row: softcap, masks, P = 2^(S2 - lse2), dS = P (dP - D_i) [(1 - tanh^2)].
  const bool capped = p.softcap > 0.0f;
  const VF inv_cap = hn::Set(d, capped ? 1.0f / p.softcap : 0.0f);
  const VF cap_log2e = hn::Set(d, p.softcap * kLog2e);
  const VF one = hn::Set(d, 1.0f), neg_inf = hn::Set(d, -std::numeric_limits<float>::infinity());
  const VF zero = hn::Zero(d);
  const int64_t nk = std::min(BK, p.seq_k - j0);
  for (int64_t r = 0; r < nr; ++r) {
    float* srow = t.s + r * BK;
    float* dsrow = t.ds + r * BK;
    float* caprow = t.cap + r * BK;
    if (t.lo[r] > t.hi[r]) {  // no visible key: P = dS = 0
      std::memset(srow, 0, sizeof(float) * BK);
      std::memset(dsrow, 0, sizeof(float) * BK);
      continue;
    }
    if (capped) {  // s = cap * tanh(x / cap) in log2 units; keep 1 - tanh^2 for dS
      for (int64_t c = 0; c < BK; c += N) {
        const VF th = hn::Tanh(d, hn::Mul(hn::Load(d, srow + c), inv_cap));
        hn::Store(hn::Mul(th, cap_log2e), d, srow + c);
        hn::Store(hn::NegMulAdd(th, th, one), d, caprow + c);
      }
    }
    if (p.mask_kind != MaskKind::kNone) {
      const int64_t off = p.MaskOffset(b, h, q0 + r, j0);
      if (p.mask_kind == MaskKind::kBool) {
        const uint8_t* mk = static_cast<const uint8_t*>(p.mask) + off;
        for (int64_t j = 0; j < nk; ++j)
          if (!mk[j * p.mask_stride[3]]) srow[j] = -std::numeric_limits<float>::infinity();
      } else {
        const float* mk = static_cast<const float*>(p.mask) + off;
        for (int64_t j = 0; j < nk; ++j) srow[j] += mk[j * p.mask_stride[3]] * kLog2e;
      }
    }
    const VF lse2 = hn::Set(d, w.lse2[row0 + r]);
    const VF dval = hn::Set(d, w.dvec[row0 + r]);
    const auto lo = hn::Set(di, t.lo[r]), hi = hn::Set(di, t.hi[r]);
    for (int64_t c = 0; c < BK; c += N) {
      if (!full && (c + N <= t.lo[r] || c > t.hi[r])) {  // no key of the row here (maybe not computed)
        hn::Store(zero, d, srow + c);
        hn::Store(zero, d, dsrow + c);
        continue;
      }
      VF s = hn::Load(d, srow + c);
      if (!full) {
        const auto key = hn::Iota(di, static_cast<int32_t>(c));
        s = hn::IfThenElse(hn::RebindMask(d, hn::Or(hn::Lt(key, lo), hn::Lt(hi, key))), neg_inf, s);
      }
      const VF pr = Exp2(d, hn::Sub(s, lse2));
      VF ds = hn::Mul(pr, hn::Sub(hn::Load(d, dsrow + c), dval));
      if (capped) ds = hn::Mul(ds, hn::Load(d, caprow + c));
      hn::Store(pr, d, srow + c);
      hn::Store(ds, d, dsrow + c);
    }
  }
  return full ? Seen::kWhole : Seen::kPart;
}

// dQ[r, :] += sum_j dS[r, j] K[j, :] over a tile (rows: the block's nr query rows); on a tile
// seen in part, each register tile of rows only over the keys its rows see.
void AddDq(const Workspace& w, const Tiles& t, Seen seen, int64_t nr, int64_t nk, const float* kp,
           float* dq) {
  const DF d;
  if (seen == Seen::kWhole)
    return Gemm<kDimRows, kDimVecs, true>(d, nr, w.Dp, t.ds, w.BK, 1, kp, w.Dp, nk, dq, w.Dp);
  GemmRanged<kDimRows, kDimVecs>(d, nr, w.Dp, t.ds, w.BK, 1, kp, w.Dp, dq, w.Dp,
                                 [&](int64_t r0, int n) { return KeysOfRows(t, w.BK, r0, n); });
}

// The products of a tile that add to dK, dV (rows: the tile's nk keys) and dQ (rows: the block's
// nr query rows; with dq non-null). On a tile seen in part, each register tile of keys takes
// only the query rows that see one of its keys, and each register tile of rows only the keys
// its rows see (the skipped terms are zeros).
void AddGrads(const Workspace& w, const Tiles& t, Seen seen, int64_t nr, int64_t nk, const float* qp,
              const float* dop, const float* kp, float* dk, float* dv, float* dq) {
  const DF d;
  const int64_t BK = w.BK, Dp = w.Dp;
  if (seen == Seen::kWhole) {
    // dV[j, :] += sum_r P[r, j] dout[r, :];  dK[j, :] += sum_r dS[r, j] Qp[r, :]
    Gemm<kDimRows, kDimVecs, true>(d, nk, Dp, t.s, 1, BK, dop, Dp, nr, dv, Dp);
    Gemm<kDimRows, kDimVecs, true>(d, nk, Dp, t.ds, 1, BK, qp, Dp, nr, dk, Dp);
  } else {
    const auto rows_of_keys = [&](int64_t j0, int n) {
      const int32_t j1 = static_cast<int32_t>(j0 + n - 1);
      const auto sees = [&](int64_t r) { return t.lo[r] <= j1 && t.hi[r] >= j0; };
      int64_t first = 0, last = nr - 1;
      while (first < nr && !sees(first)) ++first;
      while (last > first && !sees(last)) --last;
      return std::pair<int64_t, int64_t>(first, first < nr ? last + 1 : first);
    };
    GemmRanged<kDimRows, kDimVecs>(d, nk, Dp, t.s, 1, BK, dop, Dp, dv, Dp, rows_of_keys);
    GemmRanged<kDimRows, kDimVecs>(d, nk, Dp, t.ds, 1, BK, qp, Dp, dk, Dp, rows_of_keys);
  }
  if (dq) AddDq(w, t, seen, nr, nk, kp, dq);
}

// Row (b, s, h) of a [B, S, H, D] input as float32: in place when it is float32 with unit
// stride, else converted into `scratch`.
const float* RowF32(DF d, DType dtype, const void* base, const int64_t* stride, int64_t b, int64_t s,
                    int64_t h, int64_t D, float* scratch) {
  const int64_t offset = b * stride[0] + s * stride[1] + h * stride[2];
  if (dtype == DType::kF32 && stride[3] == 1) return static_cast<const float*>(base) + offset;
  LoadRowF32(d, dtype, base, offset, stride[3], D, scratch);
  return scratch;
}

// Converts the inputs into the workspace: task < B * Hq packs one (batch, query head), the rest
// one (batch, KV head, key tile) each. `row` has room for (BK + 2) * Dp floats.
void Pack(const BackwardParams& bp, const Workspace& w, int64_t task, float* row) {
  const AttentionParams& p = bp.fwd;
  const DF d;
  const int64_t N = hn::Lanes(d);
  const int64_t D = p.head_dim, Sq = p.seq_q, BK = w.BK, Dp = w.Dp;
  const int64_t q_tasks = p.batch * p.n_heads;
  const int64_t full = D / N * N;  // head dims handled by whole vectors
  if (task < q_tasks) {
    const int64_t b = task / p.n_heads, h = task % p.n_heads;
    const VF q_scale = hn::Set(d, w.q_scale);
    for (int64_t i = 0; i < Sq; ++i) {
      const int64_t r = task * Sq + i;
      float* qp = w.qp + r * Dp;
      float* dop = w.dop + r * Dp;
      const float* q = RowF32(d, p.dtype, p.q, p.q_stride, b, i, h, D, row);
      int64_t dd = 0;
      for (; dd < full; dd += N) hn::Store(hn::Mul(hn::LoadU(d, q + dd), q_scale), d, qp + dd);
      for (; dd < Dp; ++dd) qp[dd] = dd < D ? q[dd] * w.q_scale : 0.0f;
      const float* dout = RowF32(d, p.dtype, bp.dout, bp.dout_stride, b, i, h, D, row);
      for (dd = 0; dd < full; dd += N) hn::Store(hn::LoadU(d, dout + dd), d, dop + dd);
      for (; dd < Dp; ++dd) dop[dd] = dd < D ? dout[dd] : 0.0f;
      const float* out = RowF32(d, p.dtype, p.out, p.out_stride, b, i, h, D, row + Dp);
      double dot[4] = {0.0, 0.0, 0.0, 0.0};  // D_i in float64 (4 chains: no serial latency)
      for (dd = 0; dd < D; ++dd) dot[dd % 4] += static_cast<double>(dop[dd]) * out[dd];
      w.dvec[r] = static_cast<float>((dot[0] + dot[1]) + (dot[2] + dot[3]));
      const float lse = bp.lse[r];
      w.lse2[r] = lse == -std::numeric_limits<float>::infinity() ? std::numeric_limits<float>::infinity()
                                                                 : lse * kLog2e;
    }
    return;
  }
  const int64_t t = task - q_tasks;  // (b * Hkv + kvh) * n_tiles + tile
  const int64_t tile = t % w.n_tiles, bh = t / w.n_tiles;
  const int64_t b = bh / p.n_kv_heads, kvh = bh % p.n_kv_heads;
  float* kt = w.kt + t * D * BK;
  float* vt = w.vt + t * D * BK;
  float* kp = w.kp + t * BK * Dp;
  float* vp = row + 2 * Dp;  // [BK][Dp] staging: V row-major, transposed below
  for (int64_t j = 0; j < BK; ++j) {
    const int64_t key = tile * BK + j;
    float* krow = kp + j * Dp;
    float* vrow = vp + j * Dp;
    if (key >= p.seq_k) {
      std::fill(krow, krow + Dp, 0.0f);
      std::fill(vrow, vrow + Dp, 0.0f);
      continue;
    }
    const float* k = RowF32(d, p.dtype, p.k, p.k_stride, b, key, kvh, D, row);
    const float* v = RowF32(d, p.dtype, p.v, p.v_stride, b, key, kvh, D, row + Dp);
    int64_t dd = 0;
    for (; dd < full; dd += N) {
      hn::Store(hn::LoadU(d, k + dd), d, krow + dd);
      hn::Store(hn::LoadU(d, v + dd), d, vrow + dd);
    }
    for (; dd < Dp; ++dd) krow[dd] = dd < D ? k[dd] : 0.0f, vrow[dd] = dd < D ? v[dd] : 0.0f;
  }
  // The transposed tiles, written contiguously (the row-major ones are in L1).
  for (int64_t dd = 0; dd < D; ++dd)
    for (int64_t j = 0; j < BK; ++j) kt[dd * BK + j] = kp[j * Dp + dd], vt[dd * BK + j] = vp[j * Dp + dd];
}

// dK and dV of key tiles [tile_begin, tile_end) of KV head kvh in batch b, over every query
// row that sees them (all query heads of the group), written to dk and dv. With dq_rows (the
// float32 [B][Hq][Sq][Dp] dQ rows of these tiles' key split), also adds their dS K to them.
// Query blocks outermost, tiles innermost: the tiles' operands and accumulators (a chunk sized
// for L2) stay in cache while each block of query rows is read once per chunk, not once per tile.
void KeyTiles(const BackwardParams& bp, const Workspace& w, int64_t b, int64_t kvh, int64_t tile_begin,
              int64_t tile_end, const Tiles& t, float* dq_rows) {
  const AttentionParams& p = bp.fwd;
  const DF d;
  const int64_t N = hn::Lanes(d);
  const int64_t D = p.head_dim, Dp = w.Dp, Sq = p.seq_q, BK = w.BK, BQ = kQueryBlock;
  const int64_t n = tile_end - tile_begin;
  // Per tile i of the chunk: dK at acc + 2 i BK Dp, dV after it, [BK][Dp] each.
  std::memset(t.acc, 0, sizeof(float) * 2 * n * BK * Dp);
  for (int64_t g = 0; g < p.group; ++g) {
    const int64_t h = kvh * p.group + g;
    for (int64_t q0 = 0; q0 < Sq; q0 += BQ) {
      const int64_t nr = std::min(BQ, Sq - q0);
      const int64_t row0 = (b * p.n_heads + h) * Sq + q0;
      for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
        const Seen seen = ProbsAndGrads(bp, w, b, h, q0, nr, tile, t);
        if (seen == Seen::kNone) continue;
        const int64_t nk = std::min(BK, p.seq_k - tile * BK);
        float* dk = t.acc + 2 * (tile - tile_begin) * BK * Dp;
        float* dv = dk + BK * Dp;
        const float* kp = w.kp + ((b * p.n_kv_heads + kvh) * w.n_tiles + tile) * BK * Dp;
        AddGrads(w, t, seen, nr, nk, w.qp + row0 * Dp, w.dop + row0 * Dp, kp, dk, dv,
                 dq_rows ? dq_rows + row0 * Dp : nullptr);
      }
    }
  }
  // dk = scale * dS^T Q = (scale / q_scale) dS^T Qp
  const float k_out = p.scale / w.q_scale;
  const VF k_out_v = hn::Set(d, k_out);
  const bool dk_direct = p.dtype == DType::kF32 && bp.dk_stride[3] == 1;
  const bool dv_direct = p.dtype == DType::kF32 && bp.dv_stride[3] == 1;
  const int64_t full = D / N * N;
  const int64_t n_keys = std::min(tile_end * BK, p.seq_k) - tile_begin * BK;
  for (int64_t j = 0; j < n_keys; ++j) {
    const int64_t key = tile_begin * BK + j;
    const int64_t k_base = b * bp.dk_stride[0] + key * bp.dk_stride[1] + kvh * bp.dk_stride[2];
    const int64_t v_base = b * bp.dv_stride[0] + key * bp.dv_stride[1] + kvh * bp.dv_stride[2];
    const float* dk_row = t.acc + (2 * (j / BK) * BK + j % BK) * Dp;
    const float* dv_row = dk_row + BK * Dp;
    int64_t dd = 0;
    if (dk_direct) {
      float* out = static_cast<float*>(bp.dk) + k_base;
      for (; dd < full; dd += N) hn::StoreU(hn::Mul(hn::Load(d, dk_row + dd), k_out_v), d, out + dd);
    }
    for (; dd < D; ++dd) StoreOut(p.dtype, bp.dk, k_base + dd * bp.dk_stride[3], dk_row[dd] * k_out);
    if (dv_direct) {
      std::memcpy(static_cast<float*>(bp.dv) + v_base, dv_row, sizeof(float) * D);
    } else {
      for (dd = 0; dd < D; ++dd) StoreOut(p.dtype, bp.dv, v_base + dd * bp.dv_stride[3], dv_row[dd]);
    }
  }
}

// dq[b, q0 + r, h, :] = scale * the sum over splits (in split order) of the float32 rows
// src + r * Dp + s * split_stride, s < n_splits.
void WriteDq(const BackwardParams& bp, const Workspace& w, const float* src, int64_t n_splits,
             int64_t split_stride, int64_t b, int64_t h, int64_t q0, int64_t nr, float* row) {
  const AttentionParams& p = bp.fwd;
  const DF d;
  const int64_t N = hn::Lanes(d), D = p.head_dim;
  const VF scale = hn::Set(d, p.scale);
  for (int64_t r = 0; r < nr; ++r, src += w.Dp) {
    for (int64_t c = 0; c < w.Dp; c += N) {
      VF sum = hn::Load(d, src + c);
      for (int64_t s = 1; s < n_splits; ++s) sum = hn::Add(sum, hn::Load(d, src + s * split_stride + c));
      hn::Store(hn::Mul(sum, scale), d, row + c);
    }
    const int64_t base = b * bp.dq_stride[0] + (q0 + r) * bp.dq_stride[1] + h * bp.dq_stride[2];
    if (p.dtype == DType::kF32 && bp.dq_stride[3] == 1) {
      std::memcpy(static_cast<float*>(bp.dq) + base, row, sizeof(float) * D);
    } else {
      for (int64_t dd = 0; dd < D; ++dd) StoreOut(p.dtype, bp.dq, base + dd * bp.dq_stride[3], row[dd]);
    }
  }
}

// The scratch memory of one call (the packed inputs and the dQ rows of the key splits): up to
// kCachedBytes it stays with the calling thread for its next calls, so repeated calls (training
// steps) touch no fresh pages; larger buffers are allocated for the call (into `owned`) and freed.
constexpr size_t kCachedBytes = size_t{64} << 20;
float* CallBuffer(int64_t n, AlignedPtr<float>& owned) {
  thread_local GrowBuffer<float> cache;
  if (static_cast<size_t>(n) * sizeof(float) <= kCachedBytes) return cache.Get(n);
  owned = AllocateAligned<float>(n);
  return owned.get();
}

}  // namespace

void Backward(const BackwardParams& bp) {
  const AttentionParams& p = bp.fwd;
  const DF d;
  const int64_t N = hn::Lanes(d);
  const int64_t B = p.batch, Sq = p.seq_q, Sk = p.seq_k, Hq = p.n_heads, Hkv = p.n_kv_heads, D = p.head_dim;
  if (B == 0 || Hkv == 0) return;  // no element in dq, dk or dv (Hkv = 0 implies Hq = 0)

  Workspace w;
  w.BK = kKeyVecs * N * kKeyChunks;
  w.n_tiles = (Sk + w.BK - 1) / w.BK;
  w.Dp = (D + N - 1) / N * N;
  w.q_scale = p.softcap > 0.0f ? p.scale : p.scale * kLog2e;
  // Per key tile: K^T, V^T, K and the dK, dV accumulators; a chunk of them fits in L2.
  const int64_t tile_bytes = static_cast<int64_t>(sizeof(float)) * w.BK * (2 * D + 3 * w.Dp);
  w.chunk_tiles = std::max<int64_t>(1, kChunkBytes / tile_bytes);
  const int64_t q_elems = B * Hq * Sq * w.Dp, rows = B * Hq * Sq;
  const int64_t kt_elems = B * Hkv * w.n_tiles * D * w.BK, kp_elems = B * Hkv * w.n_tiles * w.BK * w.Dp;
  const int64_t BQ = kQueryBlock, n_blocks = (Sq + BQ - 1) / BQ;
  const int64_t heads = B * Hkv;
  // Key splits per KV head: enough tasks for the threads, chosen from the shapes only (never
  // from the thread count), so the order of every addition is fixed.
  const int64_t n_splits =
      std::clamp<int64_t>((kMinTasks + heads - 1) / heads, 1, std::max<int64_t>(1, w.n_tiles));
  const int64_t split_elems = B * Hq * Sq * w.Dp;
  const bool one_pass = n_splits * split_elems * static_cast<int64_t>(sizeof(float)) <= bp.max_split_bytes;

  auto padded = [](int64_t n) { return (n + 15) / 16 * 16; };  // each array 64-byte aligned
  const int64_t total = 2 * padded(q_elems) + 2 * padded(rows) + 2 * padded(kt_elems) + padded(kp_elems) +
                        (one_pass ? n_splits * split_elems : 0);
  AlignedPtr<float> owned;
  float* f = CallBuffer(total, owned);
  auto take = [&f, &padded](int64_t n) {
    float* at = f;
    f += padded(n);
    return at;
  };
  w.qp = take(q_elems), w.dop = take(q_elems), w.dvec = take(rows), w.lse2 = take(rows);
  w.kt = take(kt_elems), w.vt = take(kt_elems), w.kp = take(kp_elems);

  ThreadPool& pool = ThreadPool::Global();
  pool.Run(B * Hq + B * Hkv * w.n_tiles, p.threads, [&](int64_t task, int) {
    thread_local GrowBuffer<float> row;
    Pack(bp, w, task, row.Get((w.BK + 2) * w.Dp));
  });
  if (bp.sinks_grad) {
    // dL/dsink_h = -sum over rows of p_sink D_i, p_sink = 2^(sink2 - lse2): in float64, in a
    // fixed order (rows without keys or sink have lse2 = +inf: p_sink = 0).
    for (int64_t h = 0; h < Hq; ++h) {
      const double sink2 = static_cast<double>(p.sinks[h]) * kLog2e;
      double g = 0.0;
      for (int64_t b = 0; sink2 > -std::numeric_limits<double>::infinity() && b < B; ++b)
        for (int64_t i = 0; i < Sq; ++i) {
          const int64_t r = (b * Hq + h) * Sq + i;
          g -= std::exp2(sink2 - w.lse2[r]) * w.dvec[r];
        }
      bp.sinks_grad[h] = static_cast<float>(g);
    }
  }

  if (one_pass) {
    // One pass: a task per (key split, batch, KV head) computes dK, dV of its keys and adds its
    // share of dQ to its split's float32 rows; then dq = scale * the sum of the splits, in order.
    float* dq_rows = f;
    const int64_t tiles_per_split = (w.n_tiles + n_splits - 1) / n_splits;
    // Split-major order: under a causal mask the first splits see the most queries, so the
    // dynamic schedule starts with the longest tasks.
    pool.Run(n_splits * heads, p.threads, [&](int64_t task, int) {
      thread_local GrowBuffer<float> scratch;
      const Tiles t = MakeTiles(scratch, w);
      const int64_t split = task / heads, b = task % heads / Hkv, kvh = task % Hkv;
      float* split_rows = dq_rows + split * split_elems;
      std::memset(split_rows + (b * Hq + kvh * p.group) * Sq * w.Dp, 0, sizeof(float) * p.group * Sq * w.Dp);
      const int64_t end = std::min(w.n_tiles, (split + 1) * tiles_per_split);
      for (int64_t tile = split * tiles_per_split; tile < end; tile += w.chunk_tiles)
        KeyTiles(bp, w, b, kvh, tile, std::min(end, tile + w.chunk_tiles), t, split_rows);
    });
    pool.Run(B * Hq * n_blocks, p.threads, [&](int64_t task, int) {
      thread_local GrowBuffer<float> row;
      const int64_t blk = task % n_blocks, bh = task / n_blocks, q0 = blk * BQ;
      WriteDq(bp, w, dq_rows + (bh * Sq + q0) * w.Dp, n_splits, split_elems, bh / Hq, bh % Hq, q0,
              std::min(BQ, Sq - q0), row.Get(w.Dp));
    });
    return;
  }

  // Two passes (when the split rows would take too much memory): dK, dV per key tile, then dQ per
  // block of query rows, both recomputing P and dS.
  pool.Run(heads * w.n_tiles, p.threads, [&](int64_t task, int) {
    thread_local GrowBuffer<float> scratch;
    const Tiles t = MakeTiles(scratch, w);
    const int64_t bh = task / w.n_tiles;
    KeyTiles(bp, w, bh / Hkv, bh % Hkv, task % w.n_tiles, task % w.n_tiles + 1, t, nullptr);
  });
  // Later query blocks first: under a causal mask they see the most keys.
  pool.Run(B * Hq * n_blocks, p.threads, [&](int64_t task, int) {
    thread_local GrowBuffer<float> scratch;
    const Tiles t = MakeTiles(scratch, w);
    const int64_t blk = n_blocks - 1 - task % n_blocks, bh = task / n_blocks;
    const int64_t b = bh / Hq, h = bh % Hq, kvh = h / p.group, q0 = blk * BQ;
    const int64_t nr = std::min(BQ, Sq - q0);
    std::memset(t.acc, 0, sizeof(float) * BQ * w.Dp);
    int64_t kmin = Sk, kmax = -1;
    for (int64_t r = 0; r < nr; ++r) {
      int64_t lo, hi;
      p.KeyRange(b, q0 + r, &lo, &hi);
      if (lo <= hi) kmin = std::min(kmin, lo), kmax = std::max(kmax, hi);
    }
    for (int64_t tile = kmin / w.BK; kmin <= kmax && tile <= kmax / w.BK; ++tile) {
      const Seen seen = ProbsAndGrads(bp, w, b, h, q0, nr, tile, t);
      if (seen == Seen::kNone) continue;
      const int64_t nk = std::min(w.BK, Sk - tile * w.BK);
      const float* kp = w.kp + ((b * Hkv + kvh) * w.n_tiles + tile) * w.BK * w.Dp;
      AddDq(w, t, seen, nr, nk, kp, t.acc);
    }
    WriteDq(bp, w, t.acc, 1, 0, b, h, q0, nr, t.acc + BQ * w.Dp);
  });
}

}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn::kernels {
HWY_EXPORT(Backward);

void BackwardDispatch(const BackwardParams& p) { HWY_DYNAMIC_DISPATCH(Backward)(p); }
}  // namespace attn::kernels
#endif
