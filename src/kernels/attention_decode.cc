// Split-K decode: few query rows (generation: 1 query x the heads of a GQA group) over a long
// KV cache. Memory-bound, so the keys are split across threads and every K/V row is read once for
// all the query heads that share it; the partial results merge by their LSE.
//   s_r[j] = q_r . k_j (dot products, horizontal sums), softmax over key blocks of kKeyBlock,
//   acc_r += sum_j p_r[j] v_j.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/aligned.h"
#include "core/thread_pool.h"
#include "kernels/attention_output.h"
#include "kernels/attention_params.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention_decode.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace {

constexpr int64_t kKeyBlock = 16;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Decode of rows [0, rows) for KV head kvh over keys [key_begin, key_end). Leaves per row r the
// unnormalized output acc + r * Dp, m[r] and l[r] (log2 units).
void DecodeBlock(const AttentionParams& p, int64_t b, int64_t kvh, int64_t key_begin, int64_t key_end,
                 int64_t Dp, float* q, float* acc, float* m, float* l, float* kbuf, float* vbuf,
                 float* scores, int64_t* lo, int64_t* hi) {
  const DF d;
  const int64_t N = hn::Lanes(d);
  const int64_t D = p.head_dim;
  const int64_t rows = p.group * p.seq_q;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const bool capped = p.softcap > 0.0f;
  const float q_scale = capped ? p.scale : p.scale * kLog2e;

  int64_t kmin = std::numeric_limits<int64_t>::max(), kmax = -1;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t qi = r / p.group, h = kvh * p.group + r % p.group;
    p.KeyRange(b, qi, &lo[r], &hi[r]);
    lo[r] = std::max(lo[r], key_begin);
    hi[r] = std::min(hi[r], key_end - 1);
    if (lo[r] <= hi[r]) kmin = std::min(kmin, lo[r]), kmax = std::max(kmax, hi[r]);
    float* qr = q + r * Dp;
    LoadRowF32(d, p.dtype, p.q, b * p.q_stride[0] + qi * p.q_stride[1] + h * p.q_stride[2], p.q_stride[3], D, qr);
    for (int64_t dd = 0; dd < D; ++dd) qr[dd] *= q_scale;
    for (int64_t dd = D; dd < Dp; ++dd) qr[dd] = 0.0f;
    for (int64_t dd = 0; dd < Dp; ++dd) acc[r * Dp + dd] = 0.0f;
    m[r] = neg_inf, l[r] = 0.0f;
  }
  for (int64_t dd = D; dd < Dp; ++dd) kbuf[dd] = vbuf[dd] = 0.0f;
  // Rows read straight from a float32 tensor when no padding is needed.
  const bool k_direct = p.dtype == DType::kF32 && p.k_stride[3] == 1 && D == Dp;
  const bool v_direct = p.dtype == DType::kF32 && p.v_stride[3] == 1 && D == Dp;

  for (int64_t k0 = kmin; k0 <= kmax; k0 += kKeyBlock) {
    const int64_t nk = std::min(kKeyBlock, kmax + 1 - k0);
    // 1. Scores of this block for every row.
    for (int64_t j = 0; j < nk; ++j) {
      const int64_t off = b * p.k_stride[0] + (k0 + j) * p.k_stride[1] + kvh * p.k_stride[2];
      const float* kr = static_cast<const float*>(p.k) + off;
      if (!k_direct) {
        LoadRowF32(d, p.dtype, p.k, off, p.k_stride[3], D, kbuf);
        kr = kbuf;
      }
      for (int64_t r = 0; r < rows; ++r) {
        const float* qr = q + r * Dp;
        VF a = hn::Zero(d);
        for (int64_t dd = 0; dd < Dp; dd += N) a = hn::MulAdd(hn::LoadU(d, qr + dd), hn::LoadU(d, kr + dd), a);
        scores[r * kKeyBlock + j] = hn::GetLane(hn::SumOfLanes(d, a));
      }
    }
    // 2. Softcap and masks, per element (blocks are small).
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t qi = r / p.group, h = kvh * p.group + r % p.group;
      float* sr = scores + r * kKeyBlock;
      for (int64_t j = 0; j < kKeyBlock; ++j) {
        const int64_t key = k0 + j;
        if (j >= nk || key < lo[r] || key > hi[r]) {
          sr[j] = neg_inf;
          continue;
        }
        if (capped) sr[j] = p.softcap * std::tanh(sr[j] / p.softcap) * kLog2e;
        if (p.mask_kind == MaskKind::kBool) {
          if (!static_cast<const uint8_t*>(p.mask)[p.MaskOffset(b, h, qi, key)]) sr[j] = neg_inf;
        } else if (p.mask_kind == MaskKind::kAdditive) {
          sr[j] += static_cast<const float*>(p.mask)[p.MaskOffset(b, h, qi, key)] * kLog2e;
        }
      }
    }
    // 3. Online softmax per row, vectorized over the block's keys.
    for (int64_t r = 0; r < rows; ++r) {
      float* sr = scores + r * kKeyBlock;
      VF mx = hn::Set(d, neg_inf);
      for (int64_t j = 0; j < kKeyBlock; j += N) mx = hn::Max(mx, hn::LoadU(d, sr + j));
      const float m_new = std::max(m[r], hn::GetLane(hn::MaxOfLanes(d, mx)));
      const float m_use = m_new == neg_inf ? 0.0f : m_new;
      VF sum = hn::Zero(d);
      for (int64_t j = 0; j < kKeyBlock; j += N) {
        const VF pr = Exp2(d, hn::Sub(hn::LoadU(d, sr + j), hn::Set(d, m_use)));
        hn::StoreU(pr, d, sr + j);
        sum = hn::Add(sum, pr);
      }
      const float alpha = hn::GetLane(Exp2(d, hn::Set(d, m[r] - m_use)));
      l[r] = l[r] * alpha + hn::GetLane(hn::SumOfLanes(d, sum));
      m[r] = m_new;
      if (alpha != 1.0f) {
        const VF va = hn::Set(d, alpha);
        for (int64_t dd = 0; dd < Dp; dd += N) hn::StoreU(hn::Mul(hn::LoadU(d, acc + r * Dp + dd), va), d, acc + r * Dp + dd);
      }
    }
    // 4. acc_r += sum_j p_r[j] v_j.
    for (int64_t j = 0; j < nk; ++j) {
      const int64_t off = b * p.v_stride[0] + (k0 + j) * p.v_stride[1] + kvh * p.v_stride[2];
      const float* vr = static_cast<const float*>(p.v) + off;
      if (!v_direct) {
        LoadRowF32(d, p.dtype, p.v, off, p.v_stride[3], D, vbuf);
        vr = vbuf;
      }
      for (int64_t dd = 0; dd < Dp; dd += N) {
        const VF vv = hn::LoadU(d, vr + dd);
        for (int64_t r = 0; r < rows; ++r) {
          float* a = acc + r * Dp + dd;
          hn::StoreU(hn::MulAdd(hn::Set(d, scores[r * kKeyBlock + j]), vv, hn::LoadU(d, a)), d, a);
        }
      }
    }
  }
}

}  // namespace

void ForwardDecode(const AttentionParams& p, int64_t n_splits) {
  const DF d;
  const int64_t N = hn::Lanes(d);
  const int64_t D = p.head_dim, Dp = (D + N - 1) / N * N;
  const int64_t rows = p.group * p.seq_q;
  const int64_t heads = p.batch * p.n_kv_heads;
  const int64_t keys_per_split = (p.seq_k + n_splits - 1) / n_splits;
  // Per (head, split): acc [rows][Dp], m [rows], l [rows].
  const int64_t slot = rows * Dp + 2 * rows;
  AlignedPtr<float> partial = AllocateAligned<float>(heads * n_splits * slot);
  ThreadPool& pool = ThreadPool::Global();
  pool.Run(heads * n_splits, p.threads, [&](int64_t t, int) {
    thread_local std::vector<float> work;
    thread_local std::vector<int64_t> ranges;
    work.resize(rows * Dp + 2 * Dp + rows * kKeyBlock);
    ranges.resize(2 * rows);
    const int64_t bh = t / n_splits, split = t % n_splits;
    const int64_t kb = split * keys_per_split, ke = std::min(p.seq_k, kb + keys_per_split);
    float* out = partial.get() + t * slot;
    DecodeBlock(p, bh / p.n_kv_heads, bh % p.n_kv_heads, kb, ke, Dp, work.data(), out, out + rows * Dp,
                out + rows * Dp + rows, work.data() + rows * Dp, work.data() + rows * Dp + Dp,
                work.data() + rows * Dp + 2 * Dp, ranges.data(), ranges.data() + rows);
  });
  // Merge the splits of every row in split order.
  std::vector<RowPartial> parts(n_splits);
  std::vector<float> merged(D);
  for (int64_t bh = 0; bh < heads; ++bh) {
    const int64_t b = bh / p.n_kv_heads, kvh = bh % p.n_kv_heads;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t split = 0; split < n_splits; ++split) {
        const float* base = partial.get() + (bh * n_splits + split) * slot;
        parts[split] = RowPartial{base + r * Dp, 1, base[rows * Dp + r], base[rows * Dp + rows + r]};
      }
      MergeAndWriteRow(p, b, kvh * p.group + r % p.group, r / p.group, parts.data(),
                       static_cast<int>(n_splits), merged.data());
    }
  }
}

}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn::kernels {
HWY_EXPORT(ForwardDecode);
void ForwardDecodeDispatch(const AttentionParams& p, int64_t n_splits) {
  HWY_DYNAMIC_DISPATCH(ForwardDecode)(p, n_splits);
}
}  // namespace attn::kernels
#endif
