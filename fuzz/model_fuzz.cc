// libFuzzer target for model loading: arbitrary bytes as a GGUF model file. Every input must either
// be refused with attn::Error or load and run: ReadConfig's hyperparameters (head sizes, sliding
// windows, RoPE scaling, softcaps, ...), LoadWeights' checks of every tensor against the
// architecture's list, the tokenizer, then a Session and a forward pass over a few tokens, one by
// one through the KV cache and then several at once, under ASan and UBSan.
//
// Seeds: the tiny models of tests/fixtures (gpt2, llama, qwen2, qwen3, gemma2, gemma3; F16 copies),
// which scripts/fuzz.sh adds to fuzz/corpus/model/. Model::Load reads a path, so each input is
// written to a file of this process first.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/model.h"

namespace {

const std::string& Path() {
  static const std::string path = [] {
    std::atexit([] { std::remove(Path().c_str()); });
    return "/tmp/attn_model_fuzz_" + std::to_string(getpid()) + ".gguf";
  }();
  return path;
}

bool Write(const uint8_t* data, size_t size) {
  FILE* f = std::fopen(Path().c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(data, 1, size, f) == size;
  return std::fclose(f) == 0 && ok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!Write(data, size)) return 0;
  try {
    const std::unique_ptr<attn::Model> model = attn::Model::Load(Path());
    const attn::ModelConfig& c = model->config();
    const int64_t capacity = std::min<int64_t>(c.context_length, 8);
    attn::Session session(*model, capacity);
    std::vector<float> logits(static_cast<size_t>(c.vocab_size) * 4);
    const int32_t a = 0, b = static_cast<int32_t>((c.vocab_size - 1) / 2);
    const int32_t tokens[4] = {a, b, b, a};
    const int64_t n = std::min<int64_t>(capacity, 4);
    for (int64_t i = 0; i < n / 2; ++i) model->Forward(session, {tokens + i, 1}, logits.data(), false, 1);
    model->Forward(session, {tokens + n / 2, static_cast<size_t>(n - n / 2)}, logits.data(), true, 1);
  } catch (const attn::Error&) {
    // A refused file (or a prompt longer than a tiny context) is the expected outcome.
  }
  return 0;
}
