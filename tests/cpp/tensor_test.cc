// float16 / bfloat16 conversions: exhaustive round trips, and rounding checked against the
// hardware conversion instructions where the CPU has them (F16C).
#include "attn/tensor.h"

#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>

namespace attn {
namespace {

TEST(Half, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
}

__attribute__((target("f16c"))) uint16_t HardwareHalf(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

TEST(Half, RoundingMatchesF16C) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "CPU has no F16C";
  // Every 37th float bit pattern: normals, subnormals, ties, overflow to infinity.
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 37) {
    float f;
    const uint32_t b = static_cast<uint32_t>(bits);
    std::memcpy(&f, &b, 4);
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToHalf(f), HardwareHalf(f)) << f;
  }
}

TEST(BFloat16, RoundsToNearestEven) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = BF16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToBF16(f), h);
  }
  // 1 + 2^-8 is halfway between 1 and the next bfloat16: ties go to the even one (1).
  EXPECT_EQ(FloatToBF16(1.0f + 1.0f / 256), 0x3f80);
  EXPECT_EQ(FloatToBF16(1.0f + 3.0f / 256), 0x3f82);
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::nanf("")))));
}

}  // namespace
}  // namespace attn
