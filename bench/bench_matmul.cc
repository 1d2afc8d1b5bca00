// Times attn::MatMul on SmolLM2-135M's linear-layer shapes (not a test).
//
//   attn_bench_matmul [--threads T] [--reps R] [--best] [--hot] [--target NAME]
//
// n = 1 (generation): weights stream from DRAM, as in a model whose weights exceed the L3 cache:
// each call reads the next of several copies of the matrix (> 128 MiB in all), and the figure is
// weight bytes / time (GB/s). With --hot every call reads the same copy, which stays in cache:
// the kernel's own speed, without the wait for memory. n = 512 (prompt): one copy, GOP/s = 2 rows cols n /
// time. Weights are random blocks (the speed does not depend on the values). --target picks a
// SIMD target of attn::SimdTargets() (say AVX3 against AVX3_VNNI). Under AVX3_VNNI it first
// measures the int8 peak of vpdpbusd on the same threads and gives each integer row's share of it.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "attn/attention.h"
#include "attn/tensor.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "kernels/quantize.h"

namespace {

using attn::gguf::TensorType;

struct Case {
  const char* name;
  TensorType type;
  int64_t cols, rows;  // in -> out features
};

std::vector<uint8_t> RandomBlocks(TensorType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const size_t row_bytes = attn::RowBytes(type, cols);
  std::vector<uint8_t> data(row_bytes * rows);
  if (type == TensorType::kF16 || type == TensorType::kF32) {  // finite values, any will do
    std::uniform_real_distribution<float> value(-0.1f, 0.1f);
    for (size_t off = 0; off < data.size();) {
      const float v = value(rng);
      if (type == TensorType::kF32) {
        std::memcpy(&data[off], &v, 4), off += 4;
      } else {
        const uint16_t h = attn::FloatToHalf(v);
        std::memcpy(&data[off], &h, 2), off += 2;
      }
    }
    return data;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : data) b = static_cast<uint8_t>(byte(rng));
  const size_t block_bytes = row_bytes / (cols / attn::BlockSize(type));
  const uint16_t scale = attn::FloatToHalf(0.01f);
  for (size_t off = 0; off < data.size(); off += block_bytes) {
    // finite scales (random bytes could be NaN): d first, then a min (Q4_1, Q5_1, Q4_K, Q5_K), or d
    // (and Q2_K's dmin) after the quants
    const size_t d_at = type == TensorType::kQ6_K   ? 208
                        : type == TensorType::kQ2_K ? 80
                        : type == TensorType::kQ3_K ? 108
                                                    : 0;
    std::memcpy(&data[off + d_at], &scale, 2);
    if (type == TensorType::kQ4_1 || type == TensorType::kQ5_1 || type == TensorType::kQ4_K ||
        type == TensorType::kQ5_K || type == TensorType::kQ2_K)
      std::memcpy(&data[off + d_at + 2], &scale, 2);
  }
  return data;
}

// The median, or with --best the minimum (steadier on a loaded machine).
bool g_best = false;
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return g_best ? v.front() : v[v.size() / 2];
}

#if defined(__x86_64__)
// The int8 peak of vpdpbusd (AVX512_VNNI) on `threads` threads, GOP/s (2 per multiply-add), as
// ../shared/tools/machine_peak.cpp measures the float peaks: 12 independent chains per thread.
#define ATTN_DP(a) a = _mm512_dpbusd_epi32(a, w, x)
__attribute__((target("avx512f,avx512vnni"))) double DpbusdPerSecond(int64_t iters) {
  // Distinct starts, so that the compiler cannot merge the chains.
  __m512i a0 = _mm512_set1_epi32(0), a1 = _mm512_set1_epi32(1), a2 = _mm512_set1_epi32(2),
          a3 = _mm512_set1_epi32(3), a4 = _mm512_set1_epi32(4), a5 = _mm512_set1_epi32(5),
          a6 = _mm512_set1_epi32(6), a7 = _mm512_set1_epi32(7), a8 = _mm512_set1_epi32(8),
          a9 = _mm512_set1_epi32(9), a10 = _mm512_set1_epi32(10), a11 = _mm512_set1_epi32(11);
  __m512i w = _mm512_set1_epi32(0x01010101), x = _mm512_set1_epi32(0x02020202);
  asm volatile("" : "+v"(w), "+v"(x));
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t it = 0; it < iters; ++it) {
    ATTN_DP(a0), ATTN_DP(a1), ATTN_DP(a2), ATTN_DP(a3), ATTN_DP(a4), ATTN_DP(a5);
    ATTN_DP(a6), ATTN_DP(a7), ATTN_DP(a8), ATTN_DP(a9), ATTN_DP(a10), ATTN_DP(a11);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  asm volatile(""
               : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7), "+v"(a8),
                 "+v"(a9), "+v"(a10), "+v"(a11));
  return static_cast<double>(iters) * 12 * 64 * 2 / s;
}
#undef ATTN_DP
double VnniPeak(int threads) {
  DpbusdPerSecond(1000000);  // warm up
  std::vector<double> per(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back([&per, t] { per[t] = DpbusdPerSecond(50000000); });
  for (auto& t : pool) t.join();
  double sum = 0.0;
  for (double v : per) sum += v;
  return sum / 1e9;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 21;
  bool hot = false;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--best") == 0) g_best = true;
    if (std::strcmp(argv[a], "--hot") == 0) hot = true;
    if (a + 1 == argc) break;
    if (std::strcmp(argv[a], "--threads") == 0) threads = std::atoi(argv[a + 1]);
    if (std::strcmp(argv[a], "--reps") == 0) reps = std::atoi(argv[a + 1]);
    if (std::strcmp(argv[a], "--target") == 0) attn::SetSimdTarget(argv[a + 1]);
    if (std::strcmp(argv[a], "--threads") == 0 || std::strcmp(argv[a], "--reps") == 0 ||
        std::strcmp(argv[a], "--target") == 0)
      ++a;
  }
  attn::ThreadPool pool(threads);
  const Case cases[] = {
      {"attn_q/o 576->576", TensorType::kQ4_1, 576, 576},
      {"attn_k/v 576->192", TensorType::kQ4_1, 576, 192},
      {"ffn_up 576->1536", TensorType::kQ4_1, 576, 1536},
      {"ffn_down 1536->576", TensorType::kQ4_1, 1536, 576},
      {"output 576->49152", TensorType::kQ8_0, 576, 49152},
      {"ffn_up 576->1536", TensorType::kQ8_0, 576, 1536},  // the formats of K-quant files
      {"ffn_up 576->1536", TensorType::kQ5_0, 576, 1536},
      {"ffn_down 1536->576", TensorType::kQ4_K, 1536, 576},
      {"ffn_down 1536->576", TensorType::kQ5_K, 1536, 576},
      {"ffn_down 1536->576", TensorType::kQ6_K, 1536, 576},
      {"ffn_down 1536->576", TensorType::kQ3_K, 1536, 576},  // Q2_K / Q3_K / IQ4 files
      {"ffn_down 1536->576", TensorType::kQ2_K, 1536, 576},
      {"ffn_down 1536->576", TensorType::kIQ4_XS, 1536, 576},
      {"ffn_up 576->1536", TensorType::kIQ4_NL, 576, 1536},
      {"ffn_up 576->1536", TensorType::kMXFP4, 576, 1536},  // gpt-oss's / MXFP4_MOE's experts
      {"ffn_up 576->1536", TensorType::kF16, 576, 1536},    // float weights (GPT-2 files, checkpoints)
      {"ffn_up 576->1536", TensorType::kF32, 576, 1536},
  };
  std::mt19937 rng(1);
  std::printf("attn MatMul (%s), %d threads, %s of %d%s\n", attn::MatMulTargetName(), threads,
              g_best ? "best" : "median", reps, hot ? ", n = 1 weights hot in cache" : "");
  double peak = 0.0;  // GOP/s of vpdpbusd, where the integer products use it
#if defined(__x86_64__)
  if (std::strcmp(attn::MatMulTargetName(), "AVX3_VNNI") == 0) {
    peak = VnniPeak(threads);
    std::printf("int8 peak (vpdpbusd, measured now): %.0f GOP/s\n", peak);
  }
#endif
  std::printf("%-22s %-5s %12s %10s %12s %10s %8s\n", "shape", "type", "n=1 us", "GB/s", "n=512 ms", "GOP/s",
              peak > 0 ? "% peak" : "");
  for (const Case& c : cases) {
    const size_t row_bytes = attn::RowBytes(c.type, c.cols);
    const size_t bytes = row_bytes * c.rows;
    const int copies = static_cast<int>(std::max<size_t>(2, (size_t{128} << 20) / bytes + 1));
    std::vector<std::vector<uint8_t>> data;
    for (int k = 0; k < copies; ++k) data.push_back(RandomBlocks(c.type, c.rows, c.cols, rng));
    std::vector<attn::WeightMatrix> w;
    for (const auto& d : data) w.push_back(attn::MakeWeightMatrix(c.type, d.data(), c.rows, c.cols, c.name));

    constexpr int64_t kPrompt = 512;
    std::vector<float> x(kPrompt * c.cols), y(kPrompt * c.rows);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& v : x) v = normal(rng);

    using Clock = std::chrono::steady_clock;
    std::vector<double> t1, t512;
    int next = 0;
    for (int r = 0; r < reps + 2 * copies; ++r) {  // the first pass over the copies warms up
      const auto t0 = Clock::now();
      attn::MatMul(w[next], x.data(), 1, c.cols, y.data(), c.rows, pool, threads);
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (r >= copies) t1.push_back(s);
      if (!hot) next = (next + 1) % copies;
    }
    for (int r = 0; r < std::max(3, reps / 4) + 1; ++r) {
      const auto t0 = Clock::now();
      attn::MatMul(w[0], x.data(), kPrompt, c.cols, y.data(), c.rows, pool, threads);
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (r > 0) t512.push_back(s);
    }
    const double m1 = Median(t1), m512 = Median(t512);
    const double gops = 2.0 * c.rows * c.cols * kPrompt / m512 / 1e9;
    const bool integer = attn::BlockSize(c.type) > 1;
    std::printf("%-22s %-5s %12.1f %10.1f %12.2f %10.1f", c.name, attn::gguf::TensorTypeName(c.type),
                m1 * 1e6, bytes / m1 / 1e9, m512 * 1e3, gops);
    if (peak > 0 && integer) std::printf(" %7.0f%%", 100.0 * gops / peak);
    std::printf("\n");
  }
  return 0;
}
