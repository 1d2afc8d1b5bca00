// Matrix products with weights stored in ggml's block formats (F32, F16, BF16; Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0 with integer kernels; Q4_K, Q5_K, Q6_K (kquants.h) in the VNNI integer kernels for
// n > 1 and in x86 integer matrix-vector kernels, otherwise decoded to float32 rows first; Q2_K,
// Q3_K, IQ4_NL, IQ4_XS decoded to float32 rows), as a language model's linear layers need them:
// y = x W^T.
//
// A weight is [rows = out features][cols = in features], each row stored contiguously as
// cols / block_size blocks (GGUF's ne = [cols, rows]). Blocks of 32 values (REFERENCE.md):
//   Q4_0: f16 d, 16 bytes of nibbles;          x = (q - 8) * d
//   Q4_1: f16 d, f16 m, 16 bytes of nibbles;   x = q * d + m
//   Q8_0: f16 d, 32 int8;                      x = q * d
// Byte j of the nibbles holds element j (low nibble) and element j + 16 (high nibble).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/thread_pool.h"
#include "format/gguf.h"

namespace attn {

using gguf::TensorType;

// A weight matrix viewed in place (usually inside the memory-mapped GGUF file).
struct WeightMatrix {
  TensorType type = TensorType::kF32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;      // output features
  int64_t cols = 0;      // input features
  size_t row_bytes = 0;  // bytes of one row, RowBytes(type, cols)
};

// Values per block (1 for F32/F16/BF16, 32 for Q4_0 ... Q8_0, 256 for the K types).
int64_t BlockSize(TensorType type);
// True when this file supports `type` for products and dequantization.
bool IsSupportedWeightType(TensorType type);
// Those types, for messages.
inline constexpr const char* kSupportedWeightTypes =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, MXFP4";
// Bytes of a row of `cols` values; throws attn::Error for an unsupported type or when cols is
// not a multiple of the block size.
size_t RowBytes(TensorType type, int64_t cols);
// Builds a view and checks it; `what` names the tensor in error messages.
WeightMatrix MakeWeightMatrix(TensorType type, const uint8_t* data, int64_t rows, int64_t cols,
                              const char* what);

// Decodes n values (a multiple of the block size) of one row into floats.
void DequantizeRow(TensorType type, const uint8_t* src, float* dst, int64_t n);

// y[i, r] = sum_c x[i, c] * W[r, c] for i in [0, n), r in [0, w.rows).
// x is f32 with row stride ldx (>= w.cols), y is f32 with row stride ldy (>= w.rows).
// The fused SIMD path; activations may be quantized to 8 bits internally (as llama.cpp does)
// for the integer block formats. threads = 0 uses the whole pool.
void MatMul(const WeightMatrix& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy,
            ThreadPool& pool, int threads = 0);

// y_k[i, :] = x[i, :] W_k^T for several weights that read the same x (Q, K and V; gate and
// up), each y_k contiguous [n, W_k.rows]. When n <= 24 and the weights share type and cols, x
// is quantized once and all rows of all products form one pool job; otherwise this is MatMul for
// each. Results equal MatMul's bit for bit. (On x86, for integer block formats, MatMul of n <= 24
// rows gives each row exactly its one-row result: the matrix-vector kernels, each weight tile
// applied to every row while in cache.)
void MatMulShared(std::span<const WeightMatrix* const> ws, const float* x, int64_t n, int64_t ldx,
                  std::span<float* const> ys, ThreadPool& pool, int threads = 0);

namespace kernels {
// The AVX-512 target's integer products for more than one x row use AVX512_VNNI (vpdpbusd) where
// CPUID reports it; attn::SetSimdTarget turns that on ("AVX3_VNNI", "AVX3_BF16", the default) or
// off ("AVX3"), so that the tests run both kernels.
bool VnniAvailable();
bool VnniEnabled();
void SetVnniEnabled(bool on);  // ignored (stays off) where the CPU lacks it
}  // namespace kernels

// The readable reference: dequantize each row of W, accumulate in double. Used by tests.
void MatMulReference(const WeightMatrix& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy);

}  // namespace attn
