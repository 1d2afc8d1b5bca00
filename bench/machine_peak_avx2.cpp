// Fallback for ../shared/tools/machine_peak.cpp on machines without AVX-512 (that tool then dies of SIGILL).
// Same method and the same output lines, with 256-bit AVX2 FMA instead of AVX-512. bf16: without AVX512_BF16
// there is no bf16 dot instruction, so bf16 attention runs on fp32 FMAs after conversion; the line says "n/a"
// and bench_sdpa.py then compares bf16 rows against the fp32 FMA peak.
// One addition, "read2v": the read2 loop of machine_peak.cpp sums into one float, a serial chain of dependent
// adds that gcc may not vectorize without -ffast-math, so on some CPUs it measures add latency, not memory.
// read2v reads the same two streams with 8 independent vector accumulators.
// Usage: machine_peak_avx2 [threads] [all|bw]   (bw: only the read2v line)
#include <immintrin.h>
#include <atomic>
#include <cstdint>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
// 12 independent chains: enough to cover FMA latency (4-5 cycles) x 2 FMA pipes.
__attribute__((target("avx2,fma"), noinline)) double dot_v(const float* b, const float* c, size_t lo, size_t hi) {
  __m256 acc[8];
  for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
  size_t j = lo;
  for (; j + 64 <= hi; j += 64) {
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
      acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(b + j + 8 * k), _mm256_loadu_ps(c + j + 8 * k), acc[k]);
  }
  float s = 0, tmp[8];
  for (int k = 0; k < 8; k++) {
    _mm256_storeu_ps(tmp, acc[k]);
    for (float x : tmp) s += x;
  }
  for (; j < hi; j++) s += b[j] * c[j];
  return s;
}
__attribute__((target("avx2,fma"))) double fma_loop(long iters) {
  __m256 a[12];
  __m256 b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
  for (long t = 0; t < iters; t++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
  }
  float s = 0, tmp[8];
  for (int i = 0; i < 12; i++) {
    _mm256_storeu_ps(tmp, a[i]);
    for (float x : tmp) s += x;
  }
  return s;
}
int main(int argc, char** argv) {
  int nt = argc > 1 ? atoi(argv[1]) : 2;
  bool all = !(argc > 2 && argv[2][0] == 'b');
  long iters = 200000000;
  if (all) {
    std::vector<std::thread> th;
    std::atomic<double> sink{0};
    double t0 = now();
    for (int i = 0; i < nt; i++)
      th.emplace_back([&] {
        double v = fma_loop(iters / 4);
        double o = sink.load();
        while (!sink.compare_exchange_weak(o, o + v)) {
        }
      });
    for (auto& t : th) t.join();
    double dt = now() - t0;
    printf("fp32 avx2 fma threads=%d: %.1f GFLOP/s (sink %g)\n", nt, 12.0 * 8 * 2 * (iters / 4) * nt / dt / 1e9,
           sink.load());
  }
  if (all) printf("bf16 dot threads=%d: n/a (no AVX512_BF16 on this CPU)\n", nt);
  // bandwidth: identical to machine_peak.cpp
  size_t n = 32 * 1024 * 1024;
  std::vector<float> A(n), B(n, 1.f), C(n, 2.f);
  for (int rep = 0; all && rep < 2; rep++) {
    double t0 = now();
    std::vector<std::thread> th;
    for (int i = 0; i < nt; i++)
      th.emplace_back([&, i] {
        size_t lo = n * i / nt, hi = n * (i + 1) / nt;
        for (int r = 0; r < 5; r++)
          for (size_t j = lo; j < hi; j++) A[j] = B[j] + 1.5f * C[j];
      });
    for (auto& t : th) t.join();
    double dt = now() - t0;
    printf("triad threads=%d: %.1f GB/s (%g)\n", nt, 5 * 3.0 * n * 4 / dt / 1e9, A[n / 2]);
  }
  for (int rep = 0; all && rep < 2; rep++) {
    double t0 = now();
    std::vector<std::thread> th;
    std::vector<double> part(nt);
    for (int i = 0; i < nt; i++)
      th.emplace_back([&, i] {
        size_t lo = n * i / nt, hi = n * (i + 1) / nt;
        double s = 0;
        for (int r = 0; r < 5; r++) {
          float acc = 0;
          for (size_t j = lo; j < hi; j++) acc += B[j] * C[j];
          s += acc;
        }
        part[i] = s;
      });
    for (auto& t : th) t.join();
    double dt = now() - t0;
    printf("read2 threads=%d: %.1f GB/s (%g)\n", nt, 5 * 2.0 * n * 4 / dt / 1e9, part[0]);
  }
  // read2v: distinct values in every page (constant pages can be deduplicated by a hypervisor), and a call
  // the compiler cannot fold across the 5 passes.
  uint32_t x = 12345;
  for (size_t j = 0; j < n; j++) {
    x = x * 1664525u + 1013904223u;
    B[j] = (float)(x >> 8) * 1e-7f;
    C[j] = (float)(x & 0xffff) * 1e-5f;
  }
  for (int rep = 0; rep < 3; rep++) {
    double t0 = now();
    std::vector<std::thread> th;
    std::vector<double> part(nt);
    for (int i = 0; i < nt; i++)
      th.emplace_back([&, i] {
        size_t lo = n * i / nt, hi = n * (i + 1) / nt;
        double s = 0;
        for (int r = 0; r < 5; r++) {
          s += dot_v(B.data(), C.data(), lo, hi);
          asm volatile("" ::: "memory");
        }
        part[i] = s;
      });
    for (auto& t : th) t.join();
    double dt = now() - t0;
    printf("read2v threads=%d: %.1f GB/s (%g)\n", nt, 5 * 2.0 * n * 4 / dt / 1e9, part[0]);
  }
}
