// thread_pool_test.cpp: the worker pool covers every index exactly once, and a threaded
// forward pass gives bit-identical logits to a single-threaded one.
#include <atomic>

#include "core/thread_pool.h"
#include "model/synth.h"
#include "model/transformer.h"
#include "test_util.h"

namespace smoe {
namespace {

TEST(ThreadPool, EveryIndexOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 5, 64, 1000, 4097}) {
      for (int64_t grain : {1, 7, 100}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        parallel_for(&pool, n, grain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[i]++;
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n << " " << grain << " " << i;
      }
    }
  }
}

TEST(ThreadPool, ThreadedForwardIsBitIdentical) {
  ModelConfig c = test::tiny_moe_config();
  c.dim = 64;
  c.n_heads = 8;
  c.hidden_dim = 96;
  c.vocab_size = 300;
  c.max_seq_len = 64;
  auto model = synth_model(c, 21);
  const std::vector<int32_t> tokens = {1, 2, 3, 250, 17, 17, 99, 5, 6, 7, 8, 9};
  std::vector<float> serial, threaded;
  Session a(*model, 32);
  a.forward(tokens, true, serial);
  ThreadPool pool(3);
  Session b(*model, 32);
  b.pool = &pool;
  b.forward(tokens, true, threaded);
  EXPECT_EQ(serial, threaded);
  const int32_t next[1] = {42};
  a.forward(next, false, serial);
  b.forward(next, false, threaded);
  EXPECT_EQ(serial, threaded);
}

}  // namespace
}  // namespace smoe
