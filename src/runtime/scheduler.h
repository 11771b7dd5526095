// scheduler.h: continuous batching over one Transformer. A fixed number of slots share the
// KV-cache budget (each slot owns a KVCache of n_ctx / n_slots tokens) and each runs one
// request's Generation. Every step() gathers all running slots' next tokens (a chunk of
// the prompt for a new request, one token for a decoding one) into ONE Transformer::forward
// call, so the MoE layer groups every sequence's tokens by expert and each expert's weights
// are read once per step; then it samples each slot's next token and reports it through the
// request's callbacks. Requests wait in a bounded FIFO queue for a free slot and join
// between steps; finished or cancelled ones leave at once.
// The server calls run() on a thread of its own; `smoe run` submits one request and calls
// step() until it is done, so the CLI and the server share this path.
// Not here: HTTP and JSON (src/server), sampling and stop rules (runtime/generate.h).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/model.h"
#include "model/transformer.h"
#include "runtime/generate.h"

namespace smoe {

struct SchedulerOptions {
  int64_t n_slots = 4;               // sequences that run at once
  int64_t n_ctx = 8192;              // KV-cache tokens in all; a slot holds n_ctx / n_slots
  int64_t max_queue = 64;            // requests that may wait for a slot
  int64_t max_prefill_tokens = 512;  // prompt tokens per step, all slots together
  void validate() const;
};

// submit() when the queue is full.
class QueueFull : public Error {
 public:
  using Error::Error;
};

struct RequestResult {
  FinishReason reason = FinishReason::Length;
  std::string error;            // for FinishReason::Error
  std::vector<int32_t> tokens;  // generated ids (EOS included when it ended the text)
  std::string text;             // all generated text (a stop string excluded)
  std::string tail;             // the end of `text` that on_token has not reported
  int64_t n_prompt = 0;
  double queue_ms = 0, prompt_ms = 0, generate_ms = 0;
};

// Called on the thread that runs step(); they must not block for long. They may call
// Scheduler::cancel() but nothing else of the scheduler.
struct RequestCallbacks {
  // Once the prompt is processed, when GenerateOptions::prompt_logprobs: the logprobs of
  // prompt tokens 1..n-1 (token 0 has none).
  std::function<void(std::span<const TokenLogprob>)> on_prompt;
  std::function<bool(const TokenOut&)> on_token;  // each generated token; false cancels
  std::function<void(const RequestResult&)> on_done;  // exactly once, last
};

struct SchedulerStats {
  int64_t n_slots = 0, slot_ctx = 0, max_queue = 0;
  int64_t slots_busy = 0, queue_depth = 0;
  int64_t kv_tokens = 0, kv_capacity = 0;  // positions filled / held by all slots
  double kv_bytes = 0;                     // memory of all KV caches
  uint64_t submitted = 0, rejected = 0, steps = 0;
  std::map<std::string, uint64_t> finished;  // by finish_reason_name
  uint64_t prompt_tokens = 0, generated_tokens = 0;
  double generated_per_s = 0;  // over the last 10 s
  int64_t n_layers = 0, n_experts = 0;
  std::vector<int64_t> expert_tokens;  // [L, E] tokens routed to each expert so far
};

class Scheduler {
 public:
  using RequestId = uint64_t;
  // The model must outlive the scheduler; pool may be null (one thread).
  Scheduler(const Model& model, const SchedulerOptions& opts, ThreadPool* pool);
  ~Scheduler();

  // Queues a request; thread-safe. Throws smoe::Error (naming the problem) for an empty
  // prompt, token ids out of range, a prompt longer than a slot's context or bad options,
  // and QueueFull when max_queue requests already wait.
  RequestId submit(std::vector<int32_t> prompt, const GenerateOptions& opts, RequestCallbacks cb);
  // Stops a request wherever it is (queued or running); thread-safe. Its on_done
  // (FinishReason::Cancelled) follows from the stepping thread. Unknown ids are ignored.
  void cancel(RequestId id);

  // One forward pass over every running slot (after admitting queued requests and dropping
  // cancelled ones). Returns false when there was nothing to do.
  bool step();
  // Steps until `stop` is set, sleeping while idle. stop() wakes it.
  void run(const std::atomic<bool>& stop);
  void wake();
  // Whether no request is queued or running.
  bool idle() const;
  // Cancels every queued and running request (they finish with Cancelled at the next step).
  void cancel_all();

  SchedulerStats stats() const;
  int64_t slot_ctx() const { return slot_ctx_; }
  const Model& model() const { return model_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Job;
  int64_t process(Job& job, const float* rows, int64_t n_rows, bool prefill);
  void admit(std::vector<std::unique_ptr<Job>>& dropped);

  const Model& model_;
  SchedulerOptions opts_;
  int64_t slot_ctx_;
  Transformer transformer_;
  std::vector<std::unique_ptr<KVCache>> caches_;  // one per slot
  std::vector<std::unique_ptr<Job>> slots_;       // running job per slot, or null
  std::vector<float> logits_;                     // [rows, V] of the current step

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Job>> queue_;
  std::set<RequestId> cancelled_;
  bool cancel_all_ = false;
  RequestId next_id_ = 1;
  int64_t running_ = 0;
  SchedulerStats stats_;
  std::deque<std::pair<Clock::time_point, int64_t>> recent_;  // (step end, tokens generated)
  Clock::time_point started_;
};

}  // namespace smoe
