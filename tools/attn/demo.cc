// `attn demo`: shows what attention computes on a toy sentence, then how fast the kernel runs here.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attn/attention.h"
#include "attn/commands.h"

namespace attn::cli {
namespace {

// With V = identity (head_dim = seq_k), out = softmax(Q K^T / sqrt(d)) V is the attention matrix
// itself, so the demo can print the weights through the fused kernel.
void PrintAttentionMatrix(int threads) {
  const std::vector<std::string> words = {"the", "cat", "sat", "on", "the", "mat"};
  const int S = static_cast<int>(words.size()), D = S;  // V = identity needs head_dim = seq_k
  // Toy embeddings: each word gets a random vector; "the" has one vector, so the second "the"
  // attends strongly to the first (a duplicate-token pattern).
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(S * D), k(S * D), v(S * S, 0.0f), out(S * S);
  std::vector<float> the(D);
  for (auto& x : the) x = normal(rng);
  for (int i = 0; i < S; ++i)
    for (int d = 0; d < D; ++d) {
      const float e = words[i] == "the" ? the[d] : normal(rng);
      q[i * D + d] = 2.0f * e;
      k[i * D + d] = e;
    }
  for (int i = 0; i < S; ++i) v[i * S + i] = 1.0f;
  AttentionOptions o;
  o.causal = true;
  o.threads = threads;
  Attention(TensorView::Contiguous(q.data(), DType::kF32, 1, S, 1, D),
            TensorView::Contiguous(k.data(), DType::kF32, 1, S, 1, D),
            TensorView::Contiguous(v.data(), DType::kF32, 1, S, 1, S),
            TensorView::Contiguous(out.data(), DType::kF32, 1, S, 1, S), o);
  std::printf("Causal attention weights on a toy sentence (row = query, column = key):\n\n%8s", "");
  for (const auto& w : words) std::printf("%7s", w.c_str());
  std::printf("\n");
  for (int i = 0; i < S; ++i) {
    std::printf("%8s", words[i].c_str());
    for (int j = 0; j < S; ++j) {
      if (j > i)
        std::printf("%7s", ".");
      else
        std::printf("%7.3f", out[i * S + j]);
    }
    std::printf("\n");
  }
  std::printf("\nEach row sums to 1; '.' marks the future, which the causal mask hides.\n\n");
}

double TimeMs(const std::function<void()>& fn) {
  fn();  // warm up
  std::vector<double> ms;
  auto start_all = std::chrono::steady_clock::now();
  do {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  } while (ms.size() < 3 ||
           (ms.size() < 50 && std::chrono::steady_clock::now() - start_all < std::chrono::milliseconds(400)));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void PrintSpeed(int threads) {
  struct Case {
    const char* name;
    int64_t heads, kv_heads, seq_q, seq_k, dim;
    bool causal;
    DType dtype;
  };
  const Case cases[] = {
      {"prefill H=8 S=1024 D=64", 8, 8, 1024, 1024, 64, false, DType::kF32},
      {"prefill H=8 S=1024 D=64 causal", 8, 8, 1024, 1024, 64, true, DType::kF32},
      {"prefill H=8 S=1024 D=64 bf16", 8, 8, 1024, 1024, 64, false, DType::kBF16},
      {"prefill GQA 9/3 S=2048 D=64 causal", 9, 3, 2048, 2048, 64, true, DType::kF32},
      {"decode GQA 9/3 Sk=8192 D=64", 9, 3, 1, 8192, 64, false, DType::kF32},
  };
  std::printf("Kernel speed on this machine (float32 unless marked, %s threads, median):\n",
              threads == 0 ? "all" : std::to_string(threads).c_str());
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (const Case& c : cases) {
    const size_t es = DTypeSize(c.dtype);
    std::vector<uint8_t> q(c.seq_q * c.heads * c.dim * es), k(c.seq_k * c.kv_heads * c.dim * es), v(k.size()),
        out(q.size());
    for (auto* buf : {&q, &k, &v}) {
      for (size_t i = 0; i < buf->size() / es; ++i) {
        const float x = uni(rng);
        if (c.dtype == DType::kBF16) {
          const uint16_t b = FloatToBF16(x);
          std::memcpy(buf->data() + i * es, &b, es);
        } else {
          std::memcpy(buf->data() + i * es, &x, es);
        }
      }
    }
    AttentionOptions o;
    o.causal = c.causal;
    o.threads = threads;
    const double ms = TimeMs([&] {
      Attention(TensorView::Contiguous(q.data(), c.dtype, 1, c.seq_q, c.heads, c.dim),
                TensorView::Contiguous(k.data(), c.dtype, 1, c.seq_k, c.kv_heads, c.dim),
                TensorView::Contiguous(v.data(), c.dtype, 1, c.seq_k, c.kv_heads, c.dim),
                TensorView::Contiguous(out.data(), c.dtype, 1, c.seq_q, c.heads, c.dim), o);
    });
    if (c.seq_q == 1) {
      const double bytes = 2.0 * c.seq_k * c.kv_heads * c.dim * es;
      std::printf("  %-36s %8.3f ms  %6.1f GB/s of K+V\n", c.name, ms, bytes / ms / 1e6);
    } else {
      double pairs = static_cast<double>(c.seq_q) * c.seq_k;
      if (c.causal) pairs = c.seq_q * (c.seq_q + 1) / 2.0;
      const double flops = 4.0 * c.heads * pairs * c.dim;
      std::printf("  %-36s %8.3f ms  %6.1f GFLOP/s\n", c.name, ms, flops / ms / 1e6);
    }
  }
  std::printf("SIMD target: %s. Side-by-side figures against PyTorch are in BENCHMARKS.md (bench/run.sh).\n",
              CurrentSimdTarget().c_str());
}

}  // namespace

void AddDemoCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("demo", "Print a small attention matrix and the kernel's speed here");
  auto threads = std::make_shared<int>(0);
  auto no_bench = std::make_shared<bool>(false);
  cmd->add_option("--threads", *threads, "Threads to use (0 = every core)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-bench", *no_bench, "Skip the speed summary");
  cmd->callback([threads, no_bench] {
    PrintAttentionMatrix(*threads);
    if (!*no_bench) PrintSpeed(*threads);
  });
}

}  // namespace attn::cli
