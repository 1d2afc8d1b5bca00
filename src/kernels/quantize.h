// 8-bit quantization of activation rows, the left operand of the integer block products in
// MatMul (matmul.h), exposed for tests and for callers that reuse a quantized row.
#pragma once

#include <cstdint>

namespace attn {

// Activations are quantized in blocks of 32, like llama.cpp's Q8_0 / Q8_1 (but with f32 scales):
//   d[b] = max_{c in b} |x[c]| / 127,  q[c] = round(x[c] / d[b]) in [-127, 127],
//   s[b] = d[b] * sum_{c in b} q[c]   (the block sum, needed by Q4_1's offset m and Q4_0's -8).
// so |x[c] - q[c] d[b]| <= d[b] / 2 (plus float rounding of x / d).
constexpr int64_t kQ8Block = 32;

// Quantizes n rows of `cols` values (a multiple of 32); x has row stride ldx, q has row stride
// cols, d and s have row stride cols / 32. Uses the best SIMD target.
void QuantizeRowsQ8(const float* x, int64_t n, int64_t ldx, int64_t cols, int8_t* q, float* d, float* s);

// The Highway target MatMul and QuantizeRowsQ8 dispatch to now (tests force each one through
// attn::SetSimdTarget and check it took effect here).
const char* MatMulTargetName();

}  // namespace attn
