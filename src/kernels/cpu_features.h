// CPU features beyond Highway 1.0.3's targets, which kernels add to the AVX3 target with a
// function target attribute: AVX512_BF16 (the attention kernels' vdpbf16ps) and AVX512_VNNI (the
// matrix products' vpdpbusd). Each is detected once, from CPUID.
#pragma once

namespace attn::kernels {

// True where Highway's AVX3 target runs (CPU and OS) and CPUID leaf `leaf`, subleaf `subleaf`
// sets bit `bit` of register `reg` (0 EAX, 1 EBX, 2 ECX, 3 EDX).
bool Avx3WithCpuidBit(unsigned leaf, unsigned subleaf, int reg, int bit);

}  // namespace attn::kernels
