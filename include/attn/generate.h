// Sampling and text generation with a KV cache.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "attn/model.h"

namespace attn {

// The sampling chain, applied in this order (llama.cpp's default order for these stages):
// logit bias -> penalties -> top-k -> top-p -> min-p -> temperature -> draw.
// temperature == 0 is greedy (argmax of the biased, penalized logits, ties to the lowest id); the
// stages after the penalties then do nothing.
struct SamplerOptions {
  float temperature = 0.0f;
  int top_k = 40;                   // 0 = off
  float top_p = 0.95f;              // 1 = off
  float min_p = 0.05f;              // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off; llama.cpp/CTRL rule: logit > 0 ? logit / p : logit * p
  // OpenAI's penalties (llama.cpp's penalty_freq / penalty_present): a token seen c times in the
  // window loses c * frequency_penalty + (c > 0) * presence_penalty from its logit. 0 = off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int repetition_window = 64;  // last tokens (prompt included) the three penalties look at
  // Added to the named tokens' logits first (OpenAI's logit_bias; -inf bans a token). An id outside
  // the vocabulary is an error at the first Sample.
  std::vector<std::pair<int32_t, float>> logit_bias;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);
  // Picks the next token from logits [vocab]; `history` is every token so far (for the penalty).
  // `allowed` (empty, or one flag per token): only flagged tokens can be drawn (a constraint such
  // as JSON mode). Throws attn::Error when the logits hold a NaN or infinity, or nothing is allowed.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> history,
                 std::span<const uint8_t> allowed = {});

 private:
  SamplerOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

// One token's log-probability and the most likely alternatives at its position (most likely
// first; ties by lower id).
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;
};

// The most rows of a pass that checks lookup drafts (1 + 23 drafts; with several sequences, all
// of theirs): up to this many rows, the products on integer weight formats give every row its
// one-row result (src/kernels/matmul.h), which keeps lookup's results those without drafts.
inline constexpr int64_t kLookupMaxRows = 24;

// One of GenerateOptions::triggered_grammars: after `trigger`, the text follows `grammar`.
struct TriggeredGrammar {
  std::string trigger;
  std::string grammar;
};

struct GenerateOptions {
  int max_tokens = 128;
  SamplerOptions sampling;
  std::vector<std::string> stop;  // stop strings (not included in the text)
  bool stop_at_eos = true;        // end at an end-of-generation token (not included)
  int threads = 0;                // 0 = every core
  // The KV cache's storage (Session): f16 by default, as llama.cpp's; kF32 for exact float32.
  // (GenerateInSession uses its session's.)
  DType kv_dtype = DType::kF16;
  // When the model's context is full: -1 ends the generation (stop_reason "context"); k >= 0
  // shifts the context (Model::ShiftContext), keeping the first k positions and forgetting half
  // of the rest, and goes on.
  int64_t context_keep = -1;
  // Log-probabilities, as OpenAI's logprobs: -1 records none; k >= 0 records, for each sampled
  // token, its log-probability under the model's own next-token distribution (the log-softmax of
  // the logits, before the sampler's penalty and temperature) and the k most likely tokens.
  int logprobs = -1;
  // With logprobs >= 0: the same for every prompt token after the first (OpenAI's echo). The whole
  // prompt is then evaluated (GenerateInSession takes none of it from the session's cache).
  bool prompt_logprobs = false;
  // With logprobs >= 0: called with each sampled token's entry as soon as it is sampled (before the
  // token's text reaches on_text), for streams.
  std::function<void(const TokenLogprob&)> on_logprob;
  // JSON mode (OpenAI's response_format json_object): only tokens that keep the text a prefix of
  // one JSON object can be drawn, and the end of generation only once the object is complete
  // (src/model/json_constraint.h). A generation cut by max_tokens or a stop string may still end
  // inside the object, as in OpenAI's and llama.cpp's JSON modes.
  bool json = false;
  // A GBNF grammar (llama.cpp's format, src/model/grammar.h; start rule "root"): only tokens that
  // keep the text a prefix of one of its sentences can be drawn, and the end of generation only
  // where a sentence is complete. A grammar that is invalid or left-recursive is an attn::Error
  // before anything is evaluated. Exclusive with `json` and `json_schema`.
  std::string grammar;
  // A JSON schema (the text of one, as OpenAI's structured outputs and llama.cpp's --json-schema):
  // converted to a grammar (src/model/json_schema.h), then as `grammar`.
  std::string json_schema;
  // Grammars for parts of the text (llama.cpp's lazy grammars; attn serve's tool calls in a model's
  // own format): the text is free until it contains one of the triggers; the text after that
  // trigger must then follow its grammar (GBNF, start rule "root") up to a complete sentence, and
  // from there any token may come: one the grammar still takes goes on with it, the first it
  // refuses closes the region, and the triggers are looked for again after it
  // (src/model/grammar_regions.h). An empty trigger opens a region at the start. Control tokens
  // and the end of generation are refused inside a region until its sentence is complete.
  // Exclusive with `json`, `grammar` and `json_schema`.
  std::vector<TriggeredGrammar> triggered_grammars;
  // Prompt lookup decoding (speculation without a draft model, as llama.cpp's lookup decoding and
  // transformers' prompt_lookup_num_tokens): after each sampled token, the tokens that followed
  // the latest earlier occurrence of the last lookup_ngram tokens of the prompt and generation
  // (else of fewer, down to lookup_min_ngram) are drafted, up to `lookup` of them, and run in one
  // pass with the sampled token (ForwardOptions::one_row_attention). The sampler draws from each
  // row's logits as it would have one token at a time; a draft is kept while it equals the token
  // drawn before it, and the cache of the rest is dropped. So the tokens, text, log-probabilities
  // and random draws are those of generation without it (bit for bit where the weights are in
  // integer formats, matmul.h); only the number of passes changes. How many of the proposed
  // tokens run (0 to `lookup`) follows the share of earlier drafts that held, weighed against
  // the cost of a longer pass. 0 = off; at most 23 (a pass of 24 rows). GenerateBatch and attn
  // serve's slots run every sequence's drafts in the step's pass, up to kLookupMaxRows rows.
  int lookup = 0;
  int lookup_ngram = 3;
  int lookup_min_ngram = 2;
  // Speculative decoding with a draft model (llama.cpp's --model-draft): after each sampled token a
  // smaller model with the same vocabulary proposes up to draft_max tokens, greedily, stopping
  // early where its most likely token's probability is below draft_p_min; they are checked in one
  // pass with the sampled token and kept as lookup's drafts are, so that the generation is the
  // one without them (bit for bit where the passes' products are row for row, as lookup's). The
  // draft model keeps its own KV cache (the same kv_dtype) of the text so far; its passes count in
  // gen_ms. With draft_adaptive (off by default), drafting pauses where it does not pay: the time the kept
  // drafts saved (one pass each) is weighed against the draft passes and the longer checking passes, and
  // while that balance stays negative the draft model rests for 4, 8, ... up to 64 tokens before
  // it is tried again (the text is the same either way; only speed and the draft counts change).
  // Not owned; exclusive with lookup and hooks; draft_max 1 to 23.
  const Model* draft_model = nullptr;
  int draft_max = 8;
  float draft_p_min = 0.75f;
  bool draft_adaptive = false;
  // Set (from any thread) to end the generation before its next forward pass, with stop_reason
  // "cancelled" (Generate, GenerateFromTokens and GenerateInSession look at it; null: never). A
  // stream whose reader has gone away stops this way.
  const std::atomic<bool>* cancel = nullptr;
  // Hooks run on every forward pass of the generation (the prompt, in pieces of at most 512
  // tokens, then each new token; HookPoint::pos0 says where a pass's rows sit): they may read or
  // edit activations as in RunWithHooks, e.g. add a steering vector to the residual stream
  // (include/attn/steer.h). Generate, GenerateFromTokens and GenerateInSession only; not with
  // lookup (its passes attend one row at a time).
  const Hooks* hooks = nullptr;
};

struct GenerateResult {
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> tokens;  // generated ids (without a final EOS)
  std::string text;             // generated text (stop string removed)
  std::string stop_reason;      // "eos", "stop", "length", "context" or "cancelled"
  double prompt_ms = 0.0, gen_ms = 0.0;
  int64_t n_prompt_evaluated = 0, n_gen_evaluated = 0;
  int64_t n_prompt_cached = 0;   // prompt tokens already in the session's cache (GenerateInSession)
  int64_t n_context_shifts = 0;  // context shifts made (GenerateOptions::context_keep)
  // GenerateOptions::lookup: draft tokens run, and those kept (each saved one forward pass).
  int64_t n_drafted = 0, n_draft_accepted = 0;
  // Tokens drawn from the generation passes' logits (the first token comes from the prompt's
  // pass): what gen_ms produced, so generation speed is n_gen_drawn() / gen_ms. Equals
  // n_gen_evaluated without lookup.
  int64_t n_gen_drawn() const { return n_gen_evaluated - n_drafted + n_draft_accepted; }
  // GenerateOptions::logprobs: one per sampled token, aligned with `tokens`, plus the EOS token's
  // when the generation ended at one (it is not in `tokens`).
  std::vector<TokenLogprob> logprobs;
  // GenerateOptions::prompt_logprobs: one per prompt token after the first.
  std::vector<TokenLogprob> prompt_logprobs;
};

// token's log-probability under the log-softmax of `logits` [vocab] and the k most likely tokens.
TokenLogprob LogprobOf(std::span<const float> logits, int32_t token, int k);

// Tokenizes `prompt` (special tokens parsed, BOS when the model asks for it), evaluates it, then
// samples up to max_tokens tokens. on_text receives text as soon as it is final (held back only
// while it could be the start of a stop string or ends inside a UTF-8 character). Throws
// attn::Error for an empty prompt or one longer than the model's context.
GenerateResult Generate(const Model& model, const std::string& prompt, const GenerateOptions& options,
                        const std::function<void(const std::string&)>& on_text = nullptr);
// The same from token ids.
GenerateResult GenerateFromTokens(const Model& model, std::vector<int32_t> prompt_tokens,
                                  const GenerateOptions& options,
                                  const std::function<void(const std::string&)>& on_text = nullptr);
// The same in an existing session (a conversation): the cached positions that begin the prompt
// are reused, so only the rest of the prompt is evaluated (llama.cpp's prompt cache); the cache
// beyond them is dropped, and the capacity grows as needed. Afterwards the session holds the
// prompt and the generated tokens (all but the last one sampled, which was never evaluated).
// Chunking differs from a fresh evaluation, so the logits can differ in the last bits.
GenerateResult GenerateInSession(const Model& model, Session& session, std::vector<int32_t> prompt_tokens,
                                 const GenerateOptions& options,
                                 const std::function<void(const std::string&)>& on_text = nullptr);

// One sequence's generation, one step at a time: GenerateInSession is a loop of it, and a driver
// of several (GenerateBatch, a server with parallel slots) runs their pending tokens through one
// Model::ForwardBatch and hands each its row of logits. The same options, sampling, stop rules,
// streaming, log-probabilities and context shift as GenerateInSession.
class JsonRecognizer;
class GrammarMatcher;
class GrammarRegions;
struct TokenMaskCache;
struct JsonMaskCache;
struct ConstraintVocabulary;

class SequenceGeneration {
 public:
  // Checks the prompt and options (attn::Error), keeps the session's cached positions that begin
  // the prompt and drops the rest, and reserves room for the prompt and max_tokens.
  SequenceGeneration(const Model& model, Session& session, std::vector<int32_t> prompt_tokens,
                     const GenerateOptions& options,
                     std::function<void(const std::string&)> on_text = nullptr);
  ~SequenceGeneration();
  SequenceGeneration(const SequenceGeneration&) = delete;
  SequenceGeneration& operator=(const SequenceGeneration&) = delete;

  Session& session() const { return *session_; }
  bool done() const { return done_; }
  // Whether the prompt must be evaluated by EvaluatePrompt (every row's logits kept, for
  // prompt_logprobs) rather than through pending().
  bool needs_prompt_rows() const { return !prompt_done_ && prompt_rows_; }
  // The tokens to run next at the session's position: the rest of the prompt, then the token just
  // sampled (followed by its drafts with GenerateOptions::lookup). Empty once done().
  std::span<const int32_t> pending() const;
  // The number of drafts at the end of pending() (GenerateOptions::lookup): Accept then takes the
  // logits of every pending() row, from a pass with ForwardOptions::one_row_attention.
  int64_t drafts() const { return prompt_done_ && !done_ ? static_cast<int64_t>(step_.size()) - 1 : 0; }
  // Forgets the drafts (pending() is then the sampled token alone): a driver of several
  // sequences (attn serve's slots) keeps its pass within kLookupMaxRows rows this way.
  void DropDrafts() {
    if (step_.size() > 1) step_.erase(step_.begin() + 1, step_.end());
  }
  // Runs the prompt on its own (Model::Forward) and accepts its logits.
  void EvaluatePrompt();
  // Runs up to `max_tokens` more of the prompt (Model::Forward) and accepts the logits once all of
  // it is in; returns whether it is. With max_tokens a multiple of ForwardOptions::max_chunk
  // (512), the pieces are the passes one Forward of the whole prompt makes, so the results are
  // EvaluatePrompt's bit for bit. (With prompt log-probabilities the whole prompt runs at once.)
  bool EvaluatePromptPiece(int64_t max_tokens);
  bool prompt_done() const { return prompt_done_; }
  // Takes the logits [vocab] of pending()'s last token (whose forward pass took `forward_ms`),
  // samples the next token, streams its text, and decides whether to go on. With drafts, the
  // logits are [1 + drafts(), vocab], one row per pending() token: the rows are sampled in turn
  // while the drawn token equals the next row's draft, and the session forgets the positions of
  // the drafts that were not kept.
  void Accept(std::span<const float> logits, double forward_ms);
  // Ends the generation here (stop_reason "cancelled"; nothing if done()): the text so far becomes
  // the result's, and what was held back for a stop string goes to on_text.
  void Cancel();
  // The result so far (complete once done()).
  const GenerateResult& result() const { return result_; }

 private:
  void Finish();
  // Samples from one row of logits; the drawn token is next_.
  void SampleOne(std::span<const float> logits);
  // Fills step_[1..] with the lookup drafts for next_ worth running (none when lookup is off), or
  // the draft model's (DraftFromModel).
  void Draft();
  void DraftFromModel(int64_t room);
  // A step of the draft model's: `kept` of `drafted` drafts held in a pass of `forward_ms`.
  void WeighDrafts(int64_t drafted, int64_t kept, double forward_ms);
  // Records a proposal's outcome: `kept` drafts held, then one failed when `missed`.
  void Observe(int64_t kept, bool missed);
  // The options of this sequence's passes outside a batch (threads, hooks).
  ForwardOptions PassOptions(bool all_logits) const;

  const Model* model_;
  Session* session_;
  GenerateOptions options_;
  std::function<void(const std::string&)> on_text_;
  Sampler sampler_;
  GenerateResult result_;
  std::vector<int32_t> history_;
  std::string text_;        // everything generated so far
  size_t streamed_ = 0;     // bytes of text_ already passed to on_text_
  int64_t reuse_ = 0;       // cached prompt positions reused
  int64_t prompt_pos_ = 0;  // prompt tokens in the session so far (EvaluatePromptPiece)
  double prompt_ms_ = 0.0;  // their forward passes' time
  int sampled_ = 0;
  int32_t next_ = 0;
  std::vector<int32_t> step_;  // the next pass's tokens after the prompt: next_, then its drafts
  // Draft outcomes, older ones forgotten geometrically: held drafts and failed ones (a prior of
  // one each), and a first draft proposed but not run, checked against the next drawn token.
  double hits_ = 3.0, misses_ = 1.0;
  int32_t shadow_ = -1;
  bool prompt_rows_ = false, prompt_done_ = false, done_ = false;
  // JSON mode: the recognizer of the text so far, and its masks by state.
  std::unique_ptr<JsonRecognizer> json_;
  std::unique_ptr<JsonMaskCache> json_masks_;
  // A grammar (GenerateOptions::grammar / json_schema): its matcher and its masks by state.
  std::unique_ptr<GrammarMatcher> grammar_;
  std::unique_ptr<TokenMaskCache> masks_;
  // Triggered grammars (GenerateOptions::triggered_grammars): the text's regions so far.
  std::unique_ptr<GrammarRegions> regions_;
  // The draft model's session and the tokens in it (GenerateOptions::draft_model).
  std::unique_ptr<Session> draft_session_;
  std::vector<int32_t> draft_tokens_;
  // draft_adaptive: the last step's draft passes (ms), whether it drafted, the balance of recent
  // steps (ms saved minus spent, decaying), the steps weighed since the last pause, and the pause.
  double draft_ms_ = 0.0, draft_gain_ = 0.0;
  bool drafted_step_ = false;
  int weighed_ = 0, pause_ = 0, pause_len_ = 4;
  const ConstraintVocabulary* vocab_ = nullptr;  // the model's token texts and their trie
  std::vector<uint8_t> allowed_;                 // this step's mask (JSON mode or a grammar)
};

// One step of several sequences in one pass (GenerateBatch, attn serve's slots): Plan drops the
// drafts that would take the pass past kLookupMaxRows rows, lists every sequence's pending()
// tokens as the pass's items, and sets options.all_logits and one_row_attention when any keeps
// drafts (each sequence's Accept then takes one row per pending() token, else one row).
struct BatchStep {
  std::vector<Model::BatchItem> items;
  std::vector<size_t> first_row;  // sequence i's logits rows: [first_row[i], first_row[i + 1])

  void Plan(std::span<SequenceGeneration* const> gens, ForwardOptions& options);
  // Rows of logits the pass writes.
  size_t rows() const { return first_row.empty() ? 0 : first_row.back(); }
  // Sequence i's rows of the pass's logits [rows(), vocab].
  std::span<const float> Logits(std::span<const float> logits, size_t i, int64_t vocab) const {
    const size_t v = static_cast<size_t>(vocab);
    return logits.subspan(first_row[i] * v, (first_row[i + 1] - first_row[i]) * v);
  }
};

// Several prompts generated together: one sequence per prompt in its own session; each prompt is
// evaluated on its own, then every step's tokens go through one Model::ForwardBatch (each weight
// read once per step for all of them). options[i] (or options[0] for all when there is one) and
// on_text[i] (optional) belong to prompt i. Each result is what GenerateFromTokens gives: bit for
// bit for weights in integer formats with up to 24 prompts on x86 (matmul.h), else within rounding
// (a batched product can take another kernel than a one-row one). gen_ms is of the shared passes.
std::vector<GenerateResult> GenerateBatch(
    const Model& model, std::span<const std::vector<int32_t>> prompts,
    std::span<const GenerateOptions> options,
    std::span<const std::function<void(const std::string&)>> on_text = {});

}  // namespace attn
