// A streamed request's events: see stream.h.
#include "serve/stream.h"

#include <cstddef>
#include <utility>
#include <vector>

#include "serve/reasoning.h"

namespace attn::serve {

void EventQueue::Push(std::string event) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(std::move(event));
  }
  cv_.notify_all();
}

void EventQueue::Close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
  }
  cv_.notify_all();
}

void EventQueue::Fail(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::move(error);
    closed_ = true;
  }
  cv_.notify_all();
}

bool EventQueue::Pop(std::string& event) {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return closed_ || !events_.empty(); });
  if (events_.empty()) return false;
  event = std::move(events_.front());
  events_.pop_front();
  return true;
}

std::exception_ptr EventQueue::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

void StreamJobs(const Model& model, std::shared_ptr<const Request> request,
                std::shared_ptr<const ResponseInfo> info, std::span<const std::shared_ptr<Job>> jobs,
                std::shared_ptr<EventQueue> events) {
  const bool chat = request->endpoint == Endpoint::kChatCompletions;
  const TokenText token_text = [&model](int32_t t) { return model.tokenizer().TokenToPiece(t); };
  struct Shared {  // touched on the slots' thread only
    int left = 0;
    bool failed = false;
    std::vector<GenerateResult> results;
  };
  auto shared = std::make_shared<Shared>();
  shared->left = static_cast<int>(jobs.size());
  shared->results.resize(jobs.size());
  // Choices interleave, each chunk naming its index.
  for (int i = 0; i < static_cast<int>(jobs.size()); ++i) {
    Job& job = *jobs[static_cast<size_t>(i)];
    if (chat) events->Push(StreamChunk(*request, *info, "", true, nullptr, i));
    // Log-probabilities ride with the chunk that carries their tokens' text: the entries of tokens
    // sampled since the last chunk (text held back for a stop string waits).
    struct LogprobState {
      std::vector<TokenLogprob> pending;
      int64_t offset = 0;  // text_offset of the next entry
    };
    auto lp = std::make_shared<LogprobState>();
    if (request->logprobs >= 0 && !chat) lp->offset = Chars(PromptText(*request, token_text));
    auto chunk_logprobs = [request, lp, token_text](size_t count) {
      if (request->logprobs < 0) return nlohmann::json();
      const std::span<const TokenLogprob> entries(lp->pending.data(), count);
      nlohmann::json j = StreamLogprobs(*request, entries, lp->offset, token_text);
      for (const TokenLogprob& e : entries) lp->offset += Chars(token_text(e.token));
      lp->pending.erase(lp->pending.begin(), lp->pending.begin() + static_cast<std::ptrdiff_t>(count));
      return j;
    };
    job.options.on_logprob = [&model, lp, chat](const TokenLogprob& e) {
      // Chat lists the answer's tokens only: not the end-of-turn token that ends it.
      if (!(chat && model.tokenizer().IsEndOfGeneration(e.token))) lp->pending.push_back(e);
    };
    // Pieces end on whole characters (SequenceGeneration holds a split one back). A chat answer
    // goes through its splitter (ChatAnswerSplitter): a think block (gpt-oss: the analysis
    // channel) streams as delta.reasoning_content, calls as delta.tool_calls once each is whole,
    // or where grammars hold them (request.tool_grammar) their arguments as they are written;
    // log-probabilities ride with the first chunk that carries text (the splitter may hold a
    // piece back).
    std::shared_ptr<AnswerSplitter> splitter;
    if (chat) splitter = ChatAnswerSplitter(*request);
    auto calls_sent = std::make_shared<size_t>(0);
    auto push_split = [events, request, info, chunk_logprobs, lp, i,
                       calls_sent](const AnswerSplitter::Out& out) {
      bool first = true;
      for (const auto& [text, reasoning] :
           {std::pair(&out.reasoning, true), std::pair(&out.content, false)}) {
        if (text->empty()) continue;
        events->Push(StreamChunk(*request, *info, *text, false,
                                 first ? chunk_logprobs(lp->pending.size()) : nlohmann::json(), i,
                                 reasoning));
        first = false;
      }
      if (request->tool_grammar) {  // the arguments as they are written
        if (!out.call_deltas.empty()) events->Push(StreamToolDeltas(*request, *info, out.call_deltas, i));
      } else if (!out.calls.empty()) {
        events->Push(StreamToolCalls(*request, *info, out.calls, *calls_sent, i));
      }
      *calls_sent += out.calls.size();
    };
    job.on_text = [events, request, info, lp, chunk_logprobs, i, splitter,
                   push_split](const std::string& piece) {
      if (splitter) {
        push_split(splitter->Feed(piece));
        return;
      }
      events->Push(StreamChunk(*request, *info, piece, false, chunk_logprobs(lp->pending.size()), i));
    };
    job.on_done = [events, request, info, lp, chunk_logprobs, shared, i, splitter, push_split,
                   calls_sent](const GenerateResult& r) {
      if (shared->failed) return;
      if (splitter) push_split(splitter->Finish());
      // Entries whose text never came (a stop string cut it, or the EOS of a completion), as the
      // plain answer lists them.
      if (request->logprobs >= 0 && !lp->pending.empty())
        events->Push(StreamChunk(*request, *info, "", false, chunk_logprobs(lp->pending.size()), i));
      events->Push(StreamFinish(*request, *info, r, i, *calls_sent > 0));
      shared->results[static_cast<size_t>(i)] = r;
      if (--shared->left == 0) {
        events->Push(StreamEnd(*request, *info, shared->results));
        events->Close();
      }
    };
    std::vector<std::weak_ptr<Job>> siblings(jobs.begin(), jobs.end());  // no cycle through the job
    job.on_error = [events, shared, siblings](std::exception_ptr e) {
      if (shared->failed) return;
      shared->failed = true;
      for (const auto& other : siblings)
        if (auto j = other.lock()) j->cancelled = true;
      events->Fail(e);
    };
  }
}

}  // namespace attn::serve
