// Training checkpoints as GGUF files (include/attn/train.h): a "gpt2" model that the runtime opens
// like any other, plus what resuming needs. The core works on plain data (a config, options and a
// list of TrainParam), so it is testable without a Trainer; SaveCheckpoint / LoadCheckpoint /
// ReadCheckpointConfig in train.h are thin wrappers over it.
//
// File contents:
//   general.architecture "gpt2", general.name "attn-trained", general.file_type 0 (all F32)
//   gpt2.{block_count, context_length, embedding_length, feed_forward_length (0: attention-only),
//         attention.head_count, attention.head_count_kv (= head_count), vocab_size} u32,
//   gpt2.attention.layer_norm_epsilon f32
//   tokenizer.ggml.* (vocab_size == 256 only): a byte-level vocabulary, token id == byte value;
//         token_type 1 (normal) for the bytes seen in training, 5 (unused) for the others (all 1
//         before any token was seen)
//   attn.train.format u32 (= 1; marks an attn checkpoint), attn.train.step u64,
//   attn.train.{batch, steps, warmup} i64, .{lr, min_lr_ratio, beta1, beta2, adam_eps,
//   weight_decay, clip, init_std} f32, .seed u64
//   tensors, F32: the params in their order (TrainParam name; ne = [cols, rows], vectors [cols]),
//   then "train.adam_m.<name>" for each, then "train.adam_v.<name>" for each (same shapes).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "attn/train.h"

namespace attn {

// Writes a checkpoint atomically (PATH.tmp, fsync, rename): on failure attn::Error is thrown and
// the file at PATH, if any, is untouched. `params` must be exactly the gpt2 tensor list of
// `config` (the names and shapes the model loader binds); empty adam_m / adam_v are written as
// zeros. `seen_tokens` ([vocab_size] or empty = all seen) are the token ids training has seen
// (Trainer::seen_tokens). Throws attn::Error naming a param whose name, shape or sizes are wrong.
void WriteCheckpoint(const TrainModelConfig& config, const TrainOptions& options,
                     const std::vector<TrainParam>& params, int64_t step, const std::string& path,
                     std::span<const uint8_t> seen_tokens = {});

// Reads a checkpoint into `params` (value, adam_m, adam_v; grad untouched) and `step`. Every check
// comes first: a file that is not an attn checkpoint, a config key that differs from `expect`, or
// a params tensor that is missing, shaped differently or not F32 throws attn::Error naming the key
// or tensor and both values, and nothing is modified.
// `seen_tokens`, when given, receives [vocab_size] flags from the token types (1 unless unused).
void ReadCheckpoint(const std::string& path, const TrainModelConfig& expect, std::vector<TrainParam>& params,
                    int64_t& step, std::vector<uint8_t>* seen_tokens = nullptr);

// The model config a checkpoint was written with (vocab_size from token_embd.weight).
TrainModelConfig ReadCheckpointConfig(const std::string& path);

// The training options stored in a checkpoint, each attn.train.* key present replacing the field
// of `defaults` (threads is not stored: it never changes the numbers).
TrainOptions ReadCheckpointOptions(const std::string& path, const TrainOptions& defaults = {});

// The 256 token texts of the byte-level vocabulary: token b is byte b in GPT-2's byte-to-unicode
// mapping (printable bytes are themselves, the others U+0100 onwards), as UTF-8.
std::vector<std::string> ByteLevelTokens();

}  // namespace attn
