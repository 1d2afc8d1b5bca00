// Generation: evaluate the prompt once, then one token at a time through the KV cache.
#include "attn/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <string>
#include <unordered_map>

#include "attn/error.h"
#include "kernels/ops.h"
#include "model/grammar.h"
#include "model/grammar_regions.h"
#include "model/json_constraint.h"
#include "model/json_schema.h"

namespace attn {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Bytes at the end of `text` that begin a UTF-8 sequence whose last bytes have not come yet.
size_t IncompleteUtf8Tail(const std::string& text) {
  // Back over at most 3 continuation bytes to the lead byte of the last sequence.
  for (size_t back = 1; back <= std::min<size_t>(4, text.size()); ++back) {
    const auto c = static_cast<unsigned char>(text[text.size() - back]);
    if ((c & 0xC0) == 0x80) continue;
    const size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? back : 0;
  }
  return 0;  // only continuation bytes: invalid UTF-8, passed on as it is
}

// Length of the end of `text` held back from the stream until the next token decides it: the
// longest suffix that is a proper prefix of some stop string, or a character still incomplete
// (so that no streamed piece splits one).
size_t HeldBack(const std::string& text, const std::vector<std::string>& stops) {
  size_t keep = IncompleteUtf8Tail(text);
  for (const std::string& stop : stops) {
    for (size_t len = std::min(stop.size() - 1, text.size()); len > keep; --len) {
      if (text.compare(text.size() - len, len, stop, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  return keep;
}

// Prompt tokens evaluated per pass when their logits are all kept (prompt_logprobs): bounds the
// [tokens, vocab] buffer.
constexpr int64_t kLogprobPiece = 256;

// Drafts per pass at most (GenerateOptions::lookup): a pass of up to 24 rows keeps the matrix
// products' row-for-row results (matmul.h).
constexpr int kMaxDrafts = static_cast<int>(kLookupMaxRows) - 1;
// The cost of each row beyond the first of a pass, in one-token passes: SmolLM2-135M Q4_1 on 2
// AVX-512 cores, 2026-12-05: 4.26 ms for one token, 6.11 / 8.85 / 13.46 / 21.77 ms for 2 / 3 / 5
// / 9 (about 0.45 each; more where the weights stream from memory, less where products dominate).
constexpr double kRowCost = 0.45;
// The weight of earlier draft outcomes against the latest one (acceptance estimate).
constexpr double kForget = 0.9;

}  // namespace

// JSON mode's token masks by recognizer state (JsonRecognizer::StateKey): a state met again
// (inside a string value, say) takes its mask from here instead of a walk over the vocabulary.
struct JsonMaskCache {
  static constexpr size_t kMax = 64;  // states kept; all are dropped when it is full
  std::unordered_map<std::string, std::vector<uint8_t>> masks;

  void Allowed(const TokenTrie& trie, const JsonRecognizer& json, std::vector<uint8_t>& allowed) {
    std::string key = json.StateKey();
    if (const auto it = masks.find(key); it != masks.end()) {
      allowed = it->second;
      return;
    }
    trie.Allowed(json, allowed);
    if (masks.size() >= kMax) masks.clear();
    masks.emplace(std::move(key), allowed);
  }
};

TokenLogprob LogprobOf(std::span<const float> logits, int32_t token, int k) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (token < 0 || token >= vocab)
    throw Error("logprobs: token " + std::to_string(token) + " is not in the vocabulary");
  const double lse = ops::LogSumExp(logits.data(), vocab);
  TokenLogprob r;
  r.token = token;
  r.logprob = static_cast<float>(logits[static_cast<size_t>(token)] - lse);
  const int64_t n = std::min<int64_t>(std::max(k, 0), vocab);
  if (n == 0) return r;
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  const auto more_likely = [&](int32_t a, int32_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
           (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), more_likely);
  for (int64_t i = 0; i < n; ++i)
    r.top.emplace_back(ids[static_cast<size_t>(i)],
                       static_cast<float>(logits[static_cast<size_t>(ids[static_cast<size_t>(i)])] - lse));
  return r;
}

GenerateResult GenerateFromTokens(const Model& model, std::vector<int32_t> prompt_tokens,
                                  const GenerateOptions& options,
                                  const std::function<void(const std::string&)>& on_text) {
  const ModelConfig& c = model.config();
  const int64_t n_prompt = static_cast<int64_t>(prompt_tokens.size());
  const int64_t capacity = std::clamp<int64_t>(n_prompt + std::max(options.max_tokens, 1), 1,
                                               std::max<int64_t>(c.context_length, 1));
  Session session(model, capacity, options.kv_dtype);
  return GenerateInSession(model, session, std::move(prompt_tokens), options, on_text);
}

SequenceGeneration::SequenceGeneration(const Model& model, Session& session,
                                       std::vector<int32_t> prompt_tokens, const GenerateOptions& options,
                                       std::function<void(const std::string&)> on_text)
    : model_(&model),
      session_(&session),
      options_(options),
      on_text_(std::move(on_text)),
      sampler_(options.sampling) {
  const ModelConfig& c = model.config();
  if (prompt_tokens.empty()) throw Error("generate: the prompt is empty (no tokens)");
  if (options.max_tokens < 0) {
    throw Error("generate: max_tokens = " + std::to_string(options.max_tokens) + " (must be >= 0)");
  }
  for (const std::string& s : options.stop) {
    if (s.empty()) throw Error("generate: an empty stop string");
  }
  if (options.lookup < 0 || options.lookup > kMaxDrafts)
    throw Error("generate: lookup = " + std::to_string(options.lookup) + " (draft tokens: 0 to " +
                std::to_string(kMaxDrafts) + ")");
  if (options.lookup > 0 && options.hooks != nullptr)
    throw Error("generate: lookup and hooks exclude each other (drafts run in passes without hooks)");
  if (options.lookup > 0 && (options.lookup_min_ngram < 1 || options.lookup_ngram < options.lookup_min_ngram))
    throw Error("generate: lookup n-grams from " + std::to_string(options.lookup_min_ngram) + " to " +
                std::to_string(options.lookup_ngram) + " (need 1 <= lookup_min_ngram <= lookup_ngram)");
  if (options.draft_model != nullptr) {
    if (options.lookup > 0) throw Error("generate: a draft model and lookup exclude each other (give one)");
    if (options.hooks != nullptr)
      throw Error(
          "generate: a draft model and hooks exclude each other (drafts run in passes without hooks)");
    if (options.draft_max < 1 || options.draft_max > kMaxDrafts)
      throw Error("generate: draft_max = " + std::to_string(options.draft_max) + " (draft tokens: 1 to " +
                  std::to_string(kMaxDrafts) + ")");
    if (!(options.draft_p_min >= 0.0f && options.draft_p_min <= 1.0f))
      throw Error("generate: draft_p_min = " + std::to_string(options.draft_p_min) +
                  " (a probability, 0 to 1)");
    const Tokenizer& t = model.tokenizer();
    const Tokenizer& d = options.draft_model->tokenizer();
    bool same = t.vocab_size() == d.vocab_size();
    for (int32_t id = 0; same && id < t.vocab_size(); ++id) same = t.TokenToPiece(id) == d.TokenToPiece(id);
    if (!same)
      throw Error("generate: the draft model's vocabulary (" + std::to_string(d.vocab_size()) +
                  " tokens) is not the model's (" + std::to_string(t.vocab_size()) +
                  "): a draft model must share the tokenizer");
    draft_session_ = std::make_unique<Session>(
        *options.draft_model,
        std::min<int64_t>(options.draft_model->config().context_length, session.capacity()),
        options.kv_dtype);
  }
  if (options.context_keep >= 0 && c.arch == Arch::kGpt2)
    throw Error("generate: a context shift needs rotary positions; gpt2's are learned (no --context-shift)");
  const int64_t n_prompt = static_cast<int64_t>(prompt_tokens.size());
  if (n_prompt > c.context_length) {
    throw Error("generate: the prompt has " + std::to_string(n_prompt) +
                " tokens, more than the model's context of " + std::to_string(c.context_length));
  }
  // The session's cached positions that start the prompt are kept (at least the last prompt token
  // is evaluated, for its logits); the rest of the cache is dropped.
  prompt_rows_ = options.logprobs >= 0 && options.prompt_logprobs;
  const std::vector<int32_t>& cached = session.tokens();
  while (!prompt_rows_ && reuse_ < static_cast<int64_t>(cached.size()) && reuse_ + 1 < n_prompt &&
         cached[static_cast<size_t>(reuse_)] == prompt_tokens[static_cast<size_t>(reuse_)])
    ++reuse_;
  session.Truncate(reuse_);
  prompt_pos_ = reuse_;
  session.Reserve(std::min<int64_t>(c.context_length, n_prompt + std::max(options.max_tokens, 1)));
  history_ = prompt_tokens;
  result_.prompt_tokens = std::move(prompt_tokens);
  if (int(options.json) + int(!options.grammar.empty()) + int(!options.json_schema.empty()) > 1)
    throw Error("generate: json mode, grammar and json_schema exclude each other (give one)");
  if (!options.grammar.empty()) {
    grammar_ = std::make_unique<GrammarMatcher>(Grammar::Parse(options.grammar));
  } else if (!options.json_schema.empty()) {
    grammar_ = std::make_unique<GrammarMatcher>(
        Grammar::Parse(JsonSchemaToGbnf(std::string_view(options.json_schema))));
  }
  if (!options.triggered_grammars.empty()) {
    if (options.json || grammar_)
      throw Error("generate: triggered_grammars exclude json mode, grammar and json_schema (give one)");
    regions_ = std::make_unique<GrammarRegions>(options.triggered_grammars);
  }
  if (options.json || grammar_ || regions_) {
    if (options.json)
      json_ = std::make_unique<JsonRecognizer>(), json_masks_ = std::make_unique<JsonMaskCache>();
    if (grammar_) masks_ = std::make_unique<TokenMaskCache>();
    vocab_ = &model.constraint_vocabulary();
    allowed_.resize(vocab_->pieces.size());
  }
  result_.n_prompt_evaluated = n_prompt - reuse_;
  result_.n_prompt_cached = reuse_;
  result_.stop_reason = "length";
}

std::span<const int32_t> SequenceGeneration::pending() const {
  if (done_) return {};
  if (!prompt_done_)
    return std::span<const int32_t>(result_.prompt_tokens).subspan(static_cast<size_t>(prompt_pos_));
  return step_;
}

bool SequenceGeneration::EvaluatePromptPiece(int64_t max_tokens) {
  if (prompt_done_) throw Error("generate: the prompt was evaluated already");
  if (max_tokens <= 0) throw Error("generate: a prompt piece of " + std::to_string(max_tokens) + " tokens");
  if (prompt_rows_) {
    EvaluatePrompt();
    return true;
  }
  const std::span<const int32_t> rest = pending();
  const int64_t n = std::min<int64_t>(max_tokens, static_cast<int64_t>(rest.size()));
  std::vector<float> logits(static_cast<size_t>(model_->config().vocab_size));
  const auto t0 = std::chrono::steady_clock::now();
  model_->Forward(*session_, rest.first(static_cast<size_t>(n)), logits.data(), PassOptions(false));
  prompt_ms_ += MsSince(t0);
  prompt_pos_ += n;
  if (n < static_cast<int64_t>(rest.size())) return false;
  Accept(logits, prompt_ms_);
  return true;
}

ForwardOptions SequenceGeneration::PassOptions(bool all_logits) const {
  ForwardOptions o;
  o.all_logits = all_logits;
  o.threads = options_.threads;
  o.hooks = options_.hooks;
  return o;
}

void SequenceGeneration::EvaluatePrompt() {
  if (prompt_done_) throw Error("generate: the prompt was evaluated already");
  const int64_t vocab = model_->config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(vocab));
  const auto t0 = std::chrono::steady_clock::now();
  if (!prompt_rows_) {
    model_->Forward(*session_, pending(), logits.data(), PassOptions(false));
    return Accept(logits, MsSince(t0));
  }
  // In pieces, every row's logits kept: row p scores prompt token p + 1; the last row is the first
  // generated token's distribution.
  const std::vector<int32_t>& prompt = result_.prompt_tokens;
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  std::vector<float> rows;
  for (int64_t start = 0; start < n_prompt; start += kLogprobPiece) {
    const int64_t n = std::min(kLogprobPiece, n_prompt - start);
    rows.resize(static_cast<size_t>(n * vocab));
    model_->Forward(
        *session_,
        std::span<const int32_t>(prompt).subspan(static_cast<size_t>(start), static_cast<size_t>(n)),
        rows.data(), PassOptions(true));
    for (int64_t r = 0; r < n; ++r) {
      const std::span<const float> row(rows.data() + r * vocab, static_cast<size_t>(vocab));
      if (start + r + 1 < n_prompt)
        result_.prompt_logprobs.push_back(
            LogprobOf(row, prompt[static_cast<size_t>(start + r + 1)], options_.logprobs));
      else
        std::copy(row.begin(), row.end(), logits.begin());
    }
  }
  Accept(logits, MsSince(t0));
}

void SequenceGeneration::Accept(std::span<const float> logits, double forward_ms) {
  if (done_) throw Error("generate: the sequence is finished");
  const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
  const int64_t drafted = drafts();
  const size_t rows = static_cast<size_t>(1 + drafted);
  if (logits.size() != rows * vocab) {
    throw Error("generate: " + std::to_string(logits.size()) + " logits for " + std::to_string(rows) +
                " row(s) of " + std::to_string(vocab));
  }
  // Like llama.cpp's eval timing, gen_ms counts the forward passes only (not sampling).
  if (!prompt_done_) {
    prompt_done_ = true;
    result_.prompt_ms = forward_ms;
  } else {
    result_.gen_ms += forward_ms;
    result_.n_gen_evaluated += static_cast<int64_t>(rows);
  }
  if (drafted == 0) {
    WeighDrafts(0, 0, forward_ms);
    SampleOne(logits);
    Draft();
    return;
  }
  // Row r scores the token after step_[r]; its draw is checked against the draft step_[r + 1]
  // (SampleOne leaves step_ alone; Draft below replaces it).
  const int64_t start = session_->n_past() - static_cast<int64_t>(rows);  // next_'s position
  int64_t kept = 0;
  for (size_t r = 0;; ++r) {
    SampleOne(logits.subspan(r * vocab, vocab));
    if (done_ || r + 1 == rows || next_ != step_[r + 1]) break;
    ++kept;
  }
  WeighDrafts(drafted, kept, forward_ms);
  result_.n_drafted += drafted;
  result_.n_draft_accepted += kept;
  session_->Truncate(start + 1 + kept);
  Observe(kept, kept < drafted);
  Draft();
}

void SequenceGeneration::Observe(int64_t kept, bool missed) {
  hits_ = kForget * hits_ + static_cast<double>(kept);
  misses_ = kForget * misses_ + (missed ? 1.0 : 0.0);
}

void SequenceGeneration::Draft() {
  step_.assign(1, next_);
  if (!done_ && options_.draft_model != nullptr) {
    if (pause_ > 0) {  // drafting did not pay lately
      --pause_;
      return;
    }
    const Session& session = *session_;
    return DraftFromModel(std::min<int64_t>(
        {options_.draft_max, session.capacity() - session.n_past() - 2, options_.max_tokens - sampled_ - 1}));
  }
  if (done_ || options_.lookup <= 0) return;
  // A proposal not run last time is checked against the token drawn since (for free).
  if (shadow_ >= 0) Observe(shadow_ == next_ ? 1 : 0, shadow_ != next_);
  shadow_ = -1;
  // Room: the pass must leave the session below its capacity (so that no context shift falls
  // inside it) and draw no more than max_tokens.
  const Session& session = *session_;
  const int64_t room = std::min<int64_t>(
      {options_.lookup, session.capacity() - session.n_past() - 2, options_.max_tokens - sampled_ - 1});
  if (room <= 0) return;
  const std::vector<int32_t>& h = history_;  // ends with next_
  const int64_t len = static_cast<int64_t>(h.size());
  int64_t from = -1, count = 0;
  for (int64_t n = std::min<int64_t>(options_.lookup_ngram, len - 1);
       from < 0 && n >= options_.lookup_min_ngram; --n) {
    // The latest earlier occurrence of the last n tokens that has a token after it.
    for (int64_t j = len - n - 1; j >= 0; --j) {
      if (std::equal(h.begin() + j, h.begin() + j + n, h.end() - n)) {
        from = j + n, count = std::min(room, len - from);
        break;
      }
    }
  }
  if (from < 0) return;
  // Draft length: each draft is kept with probability a (estimated from the drafts so far, those
  // run and those only checked), so k drafts yield 1 + a + ... + a^k tokens for a pass costing
  // 1 + kRowCost k one-token passes; k maximizes the ratio (0: none).
  const double a = hits_ / (hits_ + misses_);
  int64_t best = 0;
  double best_rate = 1.0, tokens = 1.0, term = 1.0;
  for (int64_t k = 1; k <= count; ++k) {
    term *= a, tokens += term;
    const double rate = tokens / (1.0 + kRowCost * static_cast<double>(k));
    if (rate > best_rate) best = k, best_rate = rate;
  }
  if (best == 0) {
    shadow_ = h[static_cast<size_t>(from)];
    return;
  }
  step_.insert(step_.end(), h.begin() + from, h.begin() + from + best);
}

void SequenceGeneration::DraftFromModel(int64_t room) {
  const Model& draft = *options_.draft_model;
  Session& ds = *draft_session_;
  const std::vector<int32_t>& h = history_;  // ends with next_
  // Room in the draft's cache for the text and the drafts (else none: the text outgrew it).
  room = std::min<int64_t>(room, ds.capacity() - static_cast<int64_t>(h.size()) - 1);
  if (room <= 0) return;
  const auto t0 = std::chrono::steady_clock::now();
  // The draft's cache keeps what it shares with the text (drafts that held included); the rest of
  // the text is evaluated in one pass, at least its last token for the logits.
  size_t common = 0;
  while (common < draft_tokens_.size() && common + 1 < h.size() && draft_tokens_[common] == h[common])
    ++common;
  ds.Truncate(static_cast<int64_t>(common));
  draft_tokens_.resize(common);
  const int64_t vocab = draft.config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(vocab));
  ForwardOptions fo;
  fo.threads = options_.threads;
  // The prompt in one pass, as the model evaluated it; then the tokens drawn since (kept drafts and
  // the token drawn after them), each attending as one token alone would, as in the passes that
  // drew them: so that the draft model computes the numbers the model did, and a draft from the
  // same weights is never refused.
  const size_t n_prompt = result_.prompt_tokens.size();
  if (common < n_prompt && n_prompt < h.size()) {
    const std::span<const int32_t> prompt = std::span<const int32_t>(h).subspan(common, n_prompt - common);
    draft.Forward(ds, prompt, logits.data(), fo);
    draft_tokens_.insert(draft_tokens_.end(), prompt.begin(), prompt.end());
    common = n_prompt;
  }
  const std::span<const int32_t> rest = std::span<const int32_t>(h).subspan(common);
  fo.one_row_attention = rest.size() > 1 && static_cast<int64_t>(rest.size()) <= kLookupMaxRows;
  draft.Forward(ds, rest, logits.data(), fo);
  fo.one_row_attention = false;
  draft_tokens_.insert(draft_tokens_.end(), rest.begin(), rest.end());
  for (int64_t k = 0; k < room; ++k) {
    // The draft's most likely token, if it is likely enough.
    const auto best = std::max_element(logits.begin(), logits.end());
    double z = 0.0;
    for (float l : logits) z += std::exp(static_cast<double>(l - *best));
    if (1.0 / z < options_.draft_p_min) break;
    const int32_t t = static_cast<int32_t>(best - logits.begin());
    if (t >= model_->tokenizer().vocab_size() || model_->tokenizer().IsEndOfGeneration(t)) break;
    step_.push_back(t);
    if (k + 1 == room) break;
    draft.Forward(ds, std::span<const int32_t>(&t, 1), logits.data(), fo);
    draft_tokens_.push_back(t);
  }
  draft_ms_ = MsSince(t0);
  drafted_step_ = true;
  result_.gen_ms += draft_ms_;
}

void SequenceGeneration::WeighDrafts(int64_t drafted, int64_t kept, double forward_ms) {
  if (!drafted_step_ || !options_.draft_adaptive) return;
  drafted_step_ = false;
  // A one-token pass of the model, from this pass (each extra row costs about kRowCost of one).
  const double one = forward_ms / (1.0 + kRowCost * static_cast<double>(drafted));
  const double gain =
      static_cast<double>(kept) * one - draft_ms_ - kRowCost * static_cast<double>(drafted) * one;
  draft_gain_ = 0.7 * draft_gain_ + 0.3 * gain;
  if (++weighed_ < 4) return;  // a few steps before judging
  if (draft_gain_ < 0.0) {
    pause_ = pause_len_;
    pause_len_ = std::min(2 * pause_len_, 64);
    draft_gain_ = 0.0, weighed_ = 0;
  } else {
    pause_len_ = 4;
  }
}

void SequenceGeneration::SampleOne(std::span<const float> logits) {
  if (sampled_ >= options_.max_tokens) return Finish();
  const Tokenizer& tok = model_->tokenizer();
  // The tokens that keep the text a prefix of one JSON object / of a sentence of the grammar.
  // (A triggered grammar's region constrains only while its text is not yet a whole sentence.)
  const GrammarMatcher* grammar = grammar_ ? grammar_.get() : regions_ ? regions_->constraint() : nullptr;
  if (json_ || grammar) {
    if (json_) json_masks_->Allowed(vocab_->trie, *json_, allowed_);
    if (grammar) vocab_->trie.Allowed(*grammar, allowed_, grammar_ ? masks_.get() : regions_->masks());
    const bool complete = json_ ? json_->complete() : grammar->complete();
    for (int32_t id : vocab_->textless) {  // control tokens: end of generation once complete
      allowed_[static_cast<size_t>(id)] = complete && id < tok.vocab_size() && tok.IsEndOfGeneration(id);
    }
  }
  const int32_t next = sampler_.Sample(
      logits, history_, json_ || grammar ? std::span<const uint8_t>(allowed_) : std::span<const uint8_t>());
  if (vocab_ != nullptr) {
    const std::string& piece = vocab_->pieces[static_cast<size_t>(next)];
    if (json_) json_->Feed(piece);
    if (grammar_) grammar_->Feed(piece);
    if (regions_) regions_->Feed(tok.TokenToPiece(next));
  }
  ++sampled_;
  if (options_.logprobs >= 0) {
    result_.logprobs.push_back(LogprobOf(logits, next, options_.logprobs));
    if (options_.on_logprob) options_.on_logprob(result_.logprobs.back());
  }
  if (options_.stop_at_eos && tok.IsEndOfGeneration(next)) {
    result_.stop_reason = "eos";
    return Finish();
  }
  result_.tokens.push_back(next);
  history_.push_back(next);
  text_ += tok.TokenToPiece(next);

  size_t stop_at = std::string::npos;
  for (const std::string& s : options_.stop) {
    const size_t found = text_.find(s, streamed_ > s.size() ? streamed_ - s.size() : 0);
    if (found != std::string::npos) stop_at = std::min(stop_at, found);
  }
  if (stop_at != std::string::npos) {
    text_.resize(stop_at);
    result_.stop_reason = "stop";
    return Finish();
  }
  const size_t ready = text_.size() - HeldBack(text_, options_.stop);
  if (on_text_ && ready > streamed_) on_text_(text_.substr(streamed_, ready - streamed_));
  streamed_ = std::max(streamed_, ready);

  if (sampled_ == options_.max_tokens) return Finish();
  Session& session = *session_;
  if (session.n_past() >= session.capacity()) {  // full: the capacity is the model's context
    if (options_.context_keep < 0) {
      result_.stop_reason = "context";
      return Finish();
    }
    const int64_t keep = std::min(options_.context_keep, session.n_past() - 2);
    model_->ShiftContext(session, keep, (session.n_past() - keep) / 2);
    ++result_.n_context_shifts;
  }
  next_ = next;
}

void SequenceGeneration::Finish() {
  done_ = true;
  if (on_text_ && text_.size() > streamed_) on_text_(text_.substr(streamed_));
  streamed_ = text_.size();
  result_.text = text_;
}

void SequenceGeneration::Cancel() {
  if (done_) return;
  result_.stop_reason = "cancelled";
  Finish();
}

SequenceGeneration::~SequenceGeneration() = default;

GenerateResult GenerateInSession(const Model& model, Session& session, std::vector<int32_t> prompt_tokens,
                                 const GenerateOptions& options,
                                 const std::function<void(const std::string&)>& on_text) {
  SequenceGeneration g(model, session, std::move(prompt_tokens), options, on_text);
  g.EvaluatePrompt();
  std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
  ForwardOptions fo;
  fo.threads = options.threads;
  fo.hooks = options.hooks;
  while (!g.done()) {
    if (options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed)) {
      g.Cancel();
      break;
    }
    // With drafts, every row's logits, each row attending as it would alone.
    const int64_t rows = 1 + g.drafts();
    fo.all_logits = fo.one_row_attention = rows > 1;
    logits.resize(static_cast<size_t>(rows * model.config().vocab_size));
    const auto t0 = std::chrono::steady_clock::now();
    model.Forward(session, g.pending(), logits.data(), fo);
    g.Accept(logits, MsSince(t0));
  }
  return g.result();
}

void BatchStep::Plan(std::span<SequenceGeneration* const> gens, ForwardOptions& options) {
  int64_t rows = 0, drafts = 0;
  for (SequenceGeneration* g : gens) {
    // Drafts only while the pass keeps its products row for row, so that every sequence's tokens
    // stay those of generation without drafts.
    if (rows + 1 + g->drafts() > kLookupMaxRows) g->DropDrafts();
    rows += 1 + g->drafts(), drafts += g->drafts();
  }
  items.clear(), first_row.assign(1, 0);
  for (SequenceGeneration* g : gens) items.push_back({&g->session(), g->pending()});
  options.all_logits = options.one_row_attention = drafts > 0;  // with drafts, every row's logits
  for (const Model::BatchItem& it : items)
    first_row.push_back(first_row.back() + (drafts > 0 ? it.tokens.size() : 1));
}

std::vector<GenerateResult> GenerateBatch(const Model& model, std::span<const std::vector<int32_t>> prompts,
                                          std::span<const GenerateOptions> options,
                                          std::span<const std::function<void(const std::string&)>> on_text) {
  const size_t n = prompts.size();
  if (n == 0) throw Error("generate: no prompts");
  if (options.size() != 1 && options.size() != n)
    throw Error("generate: " + std::to_string(options.size()) + " option sets for " + std::to_string(n) +
                " prompts (give one, or one per prompt)");
  if (!on_text.empty() && on_text.size() != n)
    throw Error("generate: " + std::to_string(on_text.size()) + " text callbacks for " + std::to_string(n) +
                " prompts");
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<std::unique_ptr<SequenceGeneration>> gens;
  for (size_t i = 0; i < n; ++i) {
    const GenerateOptions& o = options[options.size() == 1 ? 0 : i];
    if (o.hooks != nullptr) throw Error("generate: hooks are for one sequence at a time, not a batch");
    const int64_t n_prompt = static_cast<int64_t>(prompts[i].size());
    const int64_t capacity = std::clamp<int64_t>(n_prompt + std::max(o.max_tokens, 1), 1,
                                                 std::max<int64_t>(model.config().context_length, 1));
    sessions.push_back(std::make_unique<Session>(model, capacity, o.kv_dtype));
    gens.push_back(std::make_unique<SequenceGeneration>(model, *sessions.back(), prompts[i], o,
                                                        on_text.empty() ? nullptr : on_text[i]));
  }
  // Each prompt on its own (a batch of whole prompts would gain little: long prompts already fill
  // the matrix kernels), so that every row is computed as it is alone; then every step runs the
  // unfinished sequences' next tokens in one pass, each sequence's row of logits back to it.
  for (auto& g : gens) g->EvaluatePrompt();
  std::vector<SequenceGeneration*> active;
  std::vector<float> logits;
  BatchStep step;
  for (;;) {
    active.clear();
    for (auto& g : gens)
      if (!g->done()) active.push_back(g.get());
    if (active.empty()) break;
    ForwardOptions fo;
    fo.threads = options[0].threads;
    step.Plan(active, fo);
    logits.resize(step.rows() * static_cast<size_t>(vocab));
    const auto t0 = std::chrono::steady_clock::now();
    model.ForwardBatch(step.items, logits.data(), fo);
    const double ms = MsSince(t0);
    for (size_t i = 0; i < active.size(); ++i) active[i]->Accept(step.Logits(logits, i, vocab), ms);
  }
  std::vector<GenerateResult> results;
  for (auto& g : gens) results.push_back(g->result());
  return results;
}

GenerateResult Generate(const Model& model, const std::string& prompt, const GenerateOptions& options,
                        const std::function<void(const std::string&)>& on_text) {
  return GenerateFromTokens(model, model.tokenizer().EncodePrompt(prompt), options, on_text);
}

}  // namespace attn
