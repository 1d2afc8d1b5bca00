// A streamed completion or chat completion (OpenAI's server-sent events), without the HTTP: the
// jobs of one request (one per choice) send their events to a queue as the slots run them, and a
// reader takes them out: the server writes them to its client, Python's
// Model.create_chat_completion(stream=True) yields them as chunks.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "attn/model.h"
#include "serve/openai.h"
#include "serve/slots.h"

namespace attn::serve {

// The events of one stream, from the slots' thread to the reader's.
class EventQueue {
 public:
  void Push(std::string event);
  // No more events: Pop returns false once the queue is drained.
  void Close();
  // Closes the queue after a failure; error() then holds it.
  void Fail(std::exception_ptr error);
  // The next event, waiting for one; false once closed and drained.
  bool Pop(std::string& event);
  std::exception_ptr error() const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::string> events_;
  std::exception_ptr error_;
  bool closed_ = false;
};

// Sets the callbacks of `jobs` (choice i is jobs[i]) so that they push `request`'s stream to
// `events`: for a chat, each choice's role chunk first (pushed here), then the text as it becomes
// final (delta.reasoning_content for a <think> block with request.reasoning; with tools, the
// content as it comes and each call once whole, delta.tool_calls), log-probabilities with the chunks that
// carry their tokens' text, each choice's finish chunk, and after the last choice the usage chunk (when asked
// for) and "data: [DONE]". A failure of any job cancels the others and ends the queue with Fail. The caller
// submits the jobs.
void StreamJobs(const Model& model, std::shared_ptr<const Request> request,
                std::shared_ptr<const ResponseInfo> info, std::span<const std::shared_ptr<Job>> jobs,
                std::shared_ptr<EventQueue> events);

}  // namespace attn::serve
