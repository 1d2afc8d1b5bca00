// A float32 matrix product with any transposition, for training: C (+)= A B.
//
// The three products of a linear layer y = x W^T all go through it, each operand read in place
// through its strides (no transposed copies by the caller):
//   forward   y  = x W^T     A = x  [M, K],  B = W^T (W [N, K] read column-wise)
//   backward  dx = dy W      A = dy [M, N],  B = W
//             dW = dy^T x    A = dy^T (dy read column-wise), B = x   (the reduction over tokens)
// Both operands are first packed into panels (BLIS layout: A in slivers of kGemmRows rows,
// B in slivers of two SIMD vectors of columns), then each C tile is one register tile of
// kGemmRows x 2 vectors, accumulated over k in a fixed order. A C element is computed by one task
// and the split of tasks depends only on M, N and K, so results are bit-identical for every
// thread count.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace attn {

// A strided float32 matrix: element (i, j) at data[i * row_stride + j * col_stride].
struct GemmOperand {
  const float* data = nullptr;
  int64_t row_stride = 0;
  int64_t col_stride = 1;
};

// C[m, n] = (accumulate ? C[m, n] : 0) + sum_k A[m, k] B[k, n] for m < M, n < N; C row-major
// with row stride ldc >= N. A is M x K, B is K x N. threads = 0 uses the whole pool.
void Gemm(int64_t M, int64_t N, int64_t K, const GemmOperand& a, const GemmOperand& b, float* c, int64_t ldc,
          bool accumulate, ThreadPool& pool, int threads = 0);

// The readable reference (double accumulation, one thread), for tests.
void GemmReference(int64_t M, int64_t N, int64_t K, const GemmOperand& a, const GemmOperand& b, float* c,
                   int64_t ldc, bool accumulate);

}  // namespace attn
