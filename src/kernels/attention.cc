// Attention's entry point: validate, pick the kernel (prefill; split-K decode for <= 16 rows)
// and the decode kernel's split of keys, dispatch to the best SIMD target.
#include "attn/attention.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "attn/error.h"
#include "hwy/targets.h"
#include "kernels/attention_params.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"

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

// The bf16 dot-product kernel is a pseudo-target on top of Highway's AVX3: usable where Highway
// found AVX-512 (CPU and OS) and CPUID leaf 7 subleaf 1 reports AVX512_BF16 (EAX bit 5).
constexpr char kBf16DotTarget[] = "AVX3_BF16";

// Detected once, before any test restricts Highway's targets.
const bool bf16_dot_here = kernels::Avx3WithCpuidBit(7, 1, 0, 5);
std::atomic<bool> bf16_dot_on{bf16_dot_here};

}  // namespace

void Attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               const AttentionOptions& options) {
  kernels::AttentionParams p = kernels::MakeParams(q, k, v, out, options);
  kernels::RunAttention(p);
}

void kernels::RunAttention(AttentionParams& p) {
  p.bf16_dot = bf16_dot_on.load(std::memory_order_relaxed);
  if (p.batch == 0 || p.seq_q == 0 || p.n_heads == 0) return;
  // The entropy is tracked by the prefill kernel only.
  if (p.entropy == nullptr && p.group * p.seq_q <= kMaxDecodeRows) {
    ForwardDecodeDispatch(p, DecodeSplits(p));
  } else {
    ForwardPrefillDispatch(p);
  }
}

// The VNNI integer matrix products (kernels/matmul_panel-inl.h) on top of Highway's AVX3, where
// CPUID reports AVX512_VNNI. kBf16DotTarget, the default where both exist, has them too.
constexpr char kVnniTarget[] = "AVX3_VNNI";

std::vector<std::string> SimdTargets() {
  std::vector<std::string> names;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
    if (t == HWY_AVX3 && bf16_dot_here) names.push_back(kBf16DotTarget);
    if (t == HWY_AVX3 && kernels::VnniAvailable()) names.push_back(kVnniTarget);
    names.push_back(hwy::TargetName(t));
  }
  return names;
}

void SetSimdTarget(const std::string& name) {
  std::lock_guard<std::mutex> lock(target_mutex);
  hwy::SetSupportedTargetsForTest(0);
  bf16_dot_on = bf16_dot_here;
  kernels::SetVnniEnabled(true);
  if (name.empty()) return;
  if (bf16_dot_here && name == kBf16DotTarget) {
    hwy::SetSupportedTargetsForTest(HWY_AVX3);
    return;
  }
  bf16_dot_on = false;
  if (kernels::VnniAvailable() && name == kVnniTarget) {
    hwy::SetSupportedTargetsForTest(HWY_AVX3);
    return;
  }
  kernels::SetVnniEnabled(false);
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
    if (name == hwy::TargetName(t)) {
      hwy::SetSupportedTargetsForTest(t);
      return;
    }
  }
  bf16_dot_on = bf16_dot_here;
  kernels::SetVnniEnabled(true);
  std::string known;
  for (const auto& n : SimdTargets()) known += (known.empty() ? "" : ", ") + n;
  throw Error("set_simd_target: target '" + name + "' is not compiled or not supported here (have: " + known +
              ")");
}

std::string CurrentSimdTarget() {
  const std::string name = kernels::TargetNameDispatch();
  if (name != hwy::TargetName(HWY_AVX3)) return name;
  return bf16_dot_on ? kBf16DotTarget : kernels::VnniEnabled() ? kVnniTarget : name;
}

}  // namespace attn
