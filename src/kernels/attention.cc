// Attention's entry point: validate, pick the kernel (prefill; split-K decode for <= 16 rows)
// and the decode kernel's split of keys, dispatch to the best SIMD target.
#include "attn/attention.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "attn/error.h"
#include "hwy/targets.h"
#include "kernels/attention_params.h"

namespace attn {
namespace kernels {
void ForwardPrefillDispatch(const AttentionParams& p);
void ForwardDecodeDispatch(const AttentionParams& p, int64_t n_splits);
const char* TargetNameDispatch();
}  // namespace kernels

namespace {

// Rows (query positions x heads of a GQA group) up to which the decode kernel is used.
constexpr int64_t kMaxDecodeRows = 16;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The number of key splits depends only on the shapes (never on the thread count), so a result
// is bit-identical whatever `threads` is.
int64_t DecodeSplits(const kernels::AttentionParams& p) {
  const int64_t heads = p.batch * p.n_kv_heads;
  const int64_t by_keys = std::max<int64_t>(1, p.seq_k / 512);
  return std::clamp<int64_t>(std::min(by_keys, CeilDiv(64, heads)), 1, 64);
}

std::mutex target_mutex;

}  // namespace

void Attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               const AttentionOptions& options) {
  const kernels::AttentionParams p = kernels::MakeParams(q, k, v, out, options);
  if (p.batch == 0 || p.seq_q == 0 || p.n_heads == 0) return;
  // The entropy is tracked by the prefill kernel only.
  if (p.entropy == nullptr && p.group * p.seq_q <= kMaxDecodeRows) {
    kernels::ForwardDecodeDispatch(p, DecodeSplits(p));
  } else {
    kernels::ForwardPrefillDispatch(p);
  }
}

std::vector<std::string> SimdTargets() {
  std::vector<std::string> names;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) names.push_back(hwy::TargetName(t));
  return names;
}

void SetSimdTarget(const std::string& name) {
  std::lock_guard<std::mutex> lock(target_mutex);
  if (name.empty()) {
    hwy::SetSupportedTargetsForTest(0);
    return;
  }
  hwy::SetSupportedTargetsForTest(0);
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
    if (name == hwy::TargetName(t)) {
      hwy::SetSupportedTargetsForTest(t);
      return;
    }
  }
  std::string known;
  for (const auto& n : SimdTargets()) known += (known.empty() ? "" : ", ") + n;
  throw Error("set_simd_target: target '" + name + "' is not compiled or not supported here (have: " + known +
              ")");
}

std::string CurrentSimdTarget() { return kernels::TargetNameDispatch(); }

}  // namespace attn
