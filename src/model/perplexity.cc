// Perplexity and KL divergence over chunks of a text (include/attn/perplexity.h).
#include "attn/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>

#include "attn/error.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"

namespace attn {
namespace {

int64_t ArgMax(const float* row, int64_t n) { return std::max_element(row, row + n) - row; }

// One scored position: the model's (and optionally the base's) view of the next token.
struct Scored {
  double nll = 0, base_nll = 0;
  double kl = 0;
  double delta_p = 0;
  bool same_top1 = false;
};

Scored ScoreRow(const float* row, const float* base_row, int64_t vocab, int32_t next) {
  Scored s;
  const double lse = ops::LogSumExp(row, vocab);
  s.nll = lse - row[next];
  if (!std::isfinite(s.nll)) throw Error("perplexity: the model's logits are not finite");
  if (base_row == nullptr) return s;
  const double base_lse = ops::LogSumExp(base_row, vocab);
  s.base_nll = base_lse - base_row[next];
  if (!std::isfinite(s.base_nll)) throw Error("perplexity: the base model's logits are not finite");
  double kl = 0.0;
  for (int64_t v = 0; v < vocab; ++v) {
    const double log_pb = base_row[v] - base_lse;
    kl += std::exp(static_cast<float>(log_pb)) * (log_pb - (row[v] - lse));
  }
  s.kl = std::max(kl, 0.0);  // rounding can leave -1e-17 for identical rows
  s.delta_p = std::exp(-s.nll) - std::exp(-s.base_nll);
  s.same_top1 = ArgMax(row, vocab) == ArgMax(base_row, vocab);
  return s;
}

// Mean and standard error of the mean, as llama-perplexity computes them.
void MeanAndStderr(std::span<const double> x, double& mean, double& err) {
  double sum = 0.0, sum2 = 0.0;
  for (double v : x) {
    sum += v;
    sum2 += v * v;
  }
  const double n = static_cast<double>(x.size());
  mean = sum / n;
  const double var = sum2 / n - mean * mean;
  err = (x.size() > 1 && var > 0.0) ? std::sqrt(var / (n - 1.0)) : 0.0;
}

// Evaluates one chunk in `session` and writes the logits of positions [first, context) to `out`.
void ChunkLogits(const Model& model, Session& session, std::span<const int32_t> chunk, int64_t first,
                 int threads, std::vector<float>& out) {
  const int64_t vocab = model.config().vocab_size, context = static_cast<int64_t>(chunk.size());
  session.Reset();
  std::vector<float> last(static_cast<size_t>(vocab));
  // The first half needs no logits; the second half's rows are all scored (causal attention makes
  // them equal to those of one pass over the whole chunk).
  model.Forward(session, chunk.first(static_cast<size_t>(first)), last.data(), false, threads);
  out.resize(static_cast<size_t>((context - first) * vocab));
  model.Forward(session, chunk.subspan(static_cast<size_t>(first)), out.data(), true, threads);
}

}  // namespace

std::vector<int32_t> PerplexityTokens(const Tokenizer& tokenizer, std::string_view text) {
  std::vector<int32_t> tokens;
  if (tokenizer.add_bos() && tokenizer.bos_id() >= 0) tokens.push_back(tokenizer.bos_id());
  const std::vector<int32_t> body = tokenizer.Encode(text, /*parse_special=*/false);
  tokens.insert(tokens.end(), body.begin(), body.end());
  return tokens;
}

PerplexityResult Perplexity(const Model& model, std::span<const int32_t> tokens,
                            const PerplexityOptions& options, const PerplexityProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& cfg = model.config();
  const int64_t context = options.context == 0 ? std::min<int64_t>(512, cfg.context_length) : options.context;
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  if (context < 4 || context > cfg.context_length) {
    throw Error("perplexity: context = " + std::to_string(context) + " (must be in [4, " +
                std::to_string(cfg.context_length) + "], the model's context length)");
  }
  if (options.max_chunks == 0 || options.max_chunks < -1) {
    throw Error("perplexity: max_chunks = " + std::to_string(options.max_chunks) +
                " (must be >= 1, or -1 for every chunk)");
  }
  if (n_tokens < context) {
    throw Error("perplexity: the text is " + std::to_string(n_tokens) + " tokens, less than one chunk of " +
                std::to_string(context) + " (use a longer text or a smaller context)");
  }
  if (options.base != nullptr && options.base->config().vocab_size != cfg.vocab_size) {
    throw Error("perplexity: the base model's vocabulary has " +
                std::to_string(options.base->config().vocab_size) + " tokens, this model's " +
                std::to_string(cfg.vocab_size) + " (they must be the same)");
  }
  if (options.base != nullptr && context > options.base->config().context_length) {
    throw Error("perplexity: context = " + std::to_string(context) +
                " exceeds the base model's context length " +
                std::to_string(options.base->config().context_length));
  }

  PerplexityResult r;
  r.n_tokens = n_tokens;
  r.context = context;
  r.n_chunks = n_tokens / context;
  if (options.max_chunks > 0) r.n_chunks = std::min(r.n_chunks, options.max_chunks);
  const int64_t first = context / 2, per_chunk = context - 1 - first, vocab = cfg.vocab_size;
  r.n_scored = r.n_chunks * per_chunk;
  r.has_kl = options.base != nullptr;

  Session session(model, context, options.kv_dtype);
  std::unique_ptr<Session> base_session;
  if (r.has_kl) base_session = std::make_unique<Session>(*options.base, context, options.base_kv_dtype);
  const int32_t bos = model.tokenizer().bos_id();
  const bool add_bos = model.tokenizer().add_bos() && bos >= 0;

  std::vector<Scored> scored(static_cast<size_t>(r.n_scored));
  std::vector<float> logits, base_logits;
  std::vector<int32_t> chunk;
  double nll_sum = 0.0;
  for (int64_t c = 0; c < r.n_chunks; ++c) {
    chunk.assign(tokens.begin() + c * context, tokens.begin() + (c + 1) * context);
    if (add_bos) chunk[0] = bos;
    ChunkLogits(model, session, chunk, first, options.threads, logits);
    if (r.has_kl) ChunkLogits(*options.base, *base_session, chunk, first, options.threads, base_logits);
    Scored* out = scored.data() + c * per_chunk;
    ThreadPool::Global().Run(per_chunk, options.threads, [&](int64_t i, int) {
      out[i] = ScoreRow(logits.data() + i * vocab, r.has_kl ? base_logits.data() + i * vocab : nullptr, vocab,
                        chunk[static_cast<size_t>(first + 1 + i)]);
    });
    for (int64_t i = 0; i < per_chunk; ++i) {
      nll_sum += out[i].nll;
      r.token_nll.push_back(static_cast<float>(out[i].nll));
    }
    r.chunk_ppl.push_back(std::exp(nll_sum / static_cast<double>((c + 1) * per_chunk)));
    if (progress) progress(c, r);
  }

  std::vector<double> x(scored.size());
  double nll_err = 0.0;
  std::transform(scored.begin(), scored.end(), x.begin(), [](const Scored& s) { return s.nll; });
  MeanAndStderr(x, r.nll, nll_err);
  r.ppl = std::exp(r.nll);
  r.ppl_stderr = r.ppl * nll_err;
  if (r.has_kl) {
    KlDivergence& kl = r.kl;
    double base_nll = 0.0, base_err = 0.0, unused = 0.0;
    std::transform(scored.begin(), scored.end(), x.begin(), [](const Scored& s) { return s.base_nll; });
    MeanAndStderr(x, base_nll, base_err);
    kl.base_ppl = std::exp(base_nll);
    kl.base_ppl_stderr = kl.base_ppl * base_err;
    std::transform(scored.begin(), scored.end(), x.begin(), [](const Scored& s) { return s.delta_p; });
    MeanAndStderr(x, kl.delta_p_mean, unused);
    double sq = 0.0;
    for (double d : x) sq += d * d;
    kl.delta_p_rms = std::sqrt(sq / static_cast<double>(x.size()));
    std::transform(scored.begin(), scored.end(), x.begin(), [](const Scored& s) { return s.kl; });
    MeanAndStderr(x, kl.mean, kl.stderr_mean);
    std::sort(x.begin(), x.end());
    const auto quantile = [&](double q) {
      return x[static_cast<size_t>(std::lround(q * static_cast<double>(x.size() - 1)))];
    };
    kl.median = quantile(0.5);
    kl.p99 = quantile(0.99);
    kl.max = x.back();
    int64_t same = 0;
    for (const Scored& s : scored) same += s.same_top1;
    kl.top1_agreement = static_cast<double>(same) / static_cast<double>(scored.size());
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace attn
