#include "kernels/cpu_features.h"

#include "hwy/targets.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace attn::kernels {

bool Avx3WithCpuidBit(unsigned leaf, unsigned subleaf, int reg, int bit) {
#if (defined(__x86_64__) || defined(__i386__)) && (HWY_TARGETS & HWY_AVX3)
  if ((hwy::SupportedTargets() & HWY_AVX3) == 0) return false;
  unsigned r[4] = {0, 0, 0, 0};
  if (!__get_cpuid_count(leaf, subleaf, &r[0], &r[1], &r[2], &r[3])) return false;
  return (r[reg & 3] >> bit) & 1u;
#else
  (void)leaf, (void)subleaf, (void)reg, (void)bit;
  return false;
#endif
}

}  // namespace attn::kernels
