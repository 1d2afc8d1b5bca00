// Every invalid argument gives attn::Error whose message names the argument and the value.
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>

#include "attn/attention.h"
#include "attn/error.h"
#include "attn/kv_cache.h"
#include "test_util.h"

namespace attn::testing {
namespace {

// Expects `fn` to throw attn::Error of `kind` whose message contains every fragment.
void ExpectError(const std::function<void()>& fn, std::initializer_list<const char*> fragments,
                 Error::Kind kind = Error::Kind::kValue) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown, expected one mentioning " << *fragments.begin();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const char* f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

struct Inputs {
  Tensor q{DType::kF32, 2, 5, 6, 8}, k{DType::kF32, 2, 7, 3, 8}, v{DType::kF32, 2, 7, 3, 8},
      out{DType::kF32, 2, 5, 6, 8};
  void Run(const AttentionOptions& o = {}) { Attention(q.view, k.view, v.view, out.view, o); }
};

TEST(Errors, ShapesAndDtypes) {
  {
    Inputs in;
    in.k.view.shape[0] = 3;
    ExpectError([&] { in.Run(); }, {"k", "batch 3"});
  }
  {
    Inputs in;
    in.k = Tensor(DType::kF32, 2, 7, 4, 8), in.v = Tensor(DType::kF32, 2, 7, 4, 8);
    ExpectError([&] { in.Run(); }, {"Hq = 6", "Hkv = 4"});
  }
  {
    Inputs in;
    in.v = Tensor(DType::kF32, 2, 6, 3, 8);
    ExpectError([&] { in.Run(); }, {"v", "[2, 6, 3, 8]"});
  }
  {
    Inputs in;
    in.k = Tensor(DType::kF32, 2, 7, 3, 4), in.v = Tensor(DType::kF32, 2, 7, 3, 4);
    ExpectError([&] { in.Run(); }, {"k", "head_dim 4"});
  }
  {
    Inputs in;
    in.q = Tensor(DType::kF32, 2, 5, 6, 0), in.k = Tensor(DType::kF32, 2, 7, 3, 0);
    in.v = Tensor(DType::kF32, 2, 7, 3, 0), in.out = Tensor(DType::kF32, 2, 5, 6, 0);
    ExpectError([&] { in.Run(); }, {"head_dim", "D = 0"});
  }
  {
    Inputs in;  // f32 queries may read half keys, but K and V share one dtype
    in.k = Tensor(DType::kF16, 2, 7, 3, 8);
    ExpectError([&] { in.Run(); }, {"v", "float32", "differs from k's float16"}, Error::Kind::kType);
  }
  {
    Inputs in;  // half queries read keys of their own dtype only
    in.q = Tensor(DType::kF16, 2, 5, 6, 8), in.out = Tensor(DType::kF16, 2, 5, 6, 8);
    in.k = Tensor(DType::kBF16, 2, 7, 3, 8), in.v = Tensor(DType::kBF16, 2, 7, 3, 8);
    ExpectError([&] { in.Run(); }, {"k", "bfloat16", "q's float16"}, Error::Kind::kType);
  }
  {
    Inputs in;
    in.out = Tensor(DType::kF16, 2, 5, 6, 8);
    ExpectError([&] { in.Run(); }, {"out", "float16", "float32"}, Error::Kind::kType);
  }
  {
    Inputs in;
    in.out = Tensor(DType::kF32, 2, 5, 6, 9);
    ExpectError([&] { in.Run(); }, {"out", "[2, 5, 6, 9]"});
  }
  {
    Inputs in;
    in.q.view.shape[1] = -3;
    ExpectError([&] { in.Run(); }, {"q", "negative size -3"});
  }
  {
    Inputs in;
    in.v.view.data = nullptr;
    ExpectError([&] { in.Run(); }, {"v", "null"});
  }
  {
    Inputs in;
    in.q.view.shape[1] = int64_t{1} << 40, in.q.view.stride[1] = int64_t{1} << 30;
    ExpectError([&] { in.Run(); }, {"q", "overflows"});
  }
}

TEST(Errors, Options) {
  Inputs in;
  AttentionOptions o;
  o.window_left = -2;
  ExpectError([&] { in.Run(o); }, {"window.left = -2"});
  o = {};
  o.window_right = -5;
  ExpectError([&] { in.Run(o); }, {"window.right = -5"});
  o = {};
  o.kv_lens = {3};
  ExpectError([&] { in.Run(o); }, {"kv_lens", "length 1", "batch 2"});
  o.kv_lens = {3, -1};
  ExpectError([&] { in.Run(o); }, {"kv_lens[1] = -1"});
  o.kv_lens = {3, 8};
  ExpectError([&] { in.Run(o); }, {"kv_lens[1] = 8"});
  o = {};
  o.scale = std::numeric_limits<float>::infinity();
  ExpectError([&] { in.Run(o); }, {"scale", "not finite"});
  o = {};
  o.softcap = -1.0f;
  ExpectError([&] { in.Run(o); }, {"softcap = -1"});
  o = {};
  const float nan_sink[6] = {0.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f, 0.0f, 0.0f,
                             0.0f};  // Hq = 6
  o.sinks = nan_sink;
  ExpectError([&] { in.Run(o); }, {"sinks[1] = nan", "finite or -inf"});
  const float inf_sink[6] = {0.0f, 0.0f, 0.0f, std::numeric_limits<float>::infinity(), 0.0f, 0.0f};
  o.sinks = inf_sink;
  ExpectError([&] { in.Run(o); }, {"sinks[3] = inf"});
  o = {};
  o.threads = -1;
  ExpectError([&] { in.Run(o); }, {"threads = -1"});
  o = {};
  std::vector<float> mask(5 * 7);
  o.mask.kind = MaskKind::kAdditive;
  o.mask.data = mask.data();
  o.mask.shape[2] = 4, o.mask.shape[3] = 7, o.mask.stride[2] = 7, o.mask.stride[3] = 1;
  ExpectError([&] { in.Run(o); }, {"mask", "size 4", "axis 2"});
  o.mask.shape[2] = 5, o.mask.data = nullptr;
  ExpectError([&] { in.Run(o); }, {"mask", "null"});
}

TEST(Errors, SimdTargetAndKVCache) {
  ExpectError([] { SetSimdTarget("NOPE"); }, {"NOPE"});
  ExpectError([] { KVCache c(1, 0, 8, 16); }, {"n_kv_heads = 0"});
  KVCache cache(1, 2, 8, 4);
  Tensor k(DType::kF32, 1, 5, 2, 8), v(DType::kF32, 1, 5, 2, 8);
  ExpectError([&] { cache.Append(k.view, v.view); }, {"5 new positions", "capacity 4"});
  Tensor k16(DType::kF16, 1, 1, 2, 8);
  ExpectError([&] { cache.Append(k16.view, k16.view); }, {"k", "float16"}, Error::Kind::kType);
  KVCache half(1, 2, 8, 4, DType::kF16);  // float32 rows convert; bf16 rows do not
  Tensor kb(DType::kBF16, 1, 1, 2, 8);
  ExpectError([&] { half.Append(kb.view, kb.view); }, {"k", "bfloat16", "float16"}, Error::Kind::kType);
}

}  // namespace
}  // namespace attn::testing
