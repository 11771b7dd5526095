// scheduler.cpp: continuous batching: slots, the bounded queue, and the step that runs
// every running sequence in one forward pass.
#include "runtime/scheduler.h"

#include <algorithm>
#include <optional>

#include "tokenizer/tokenizer.h"

namespace smoe {

namespace {
double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

void SchedulerOptions::validate() const {
  SMOE_CHECK(n_slots >= 1 && n_slots <= 1024, "parallel sequences ", n_slots,
             " is out of range (expected 1..1024)");
  SMOE_CHECK(n_ctx >= n_slots, "context size ", n_ctx, " is too small for ", n_slots,
             " parallel sequences (each needs at least 1 token; the slots share it equally)");
  SMOE_CHECK(max_queue >= 0 && max_queue <= 1000000, "queue size ", max_queue,
             " is out of range (expected 0..1000000)");
  SMOE_CHECK(max_prefill_tokens >= 1, "prompt tokens per step ", max_prefill_tokens, " must be >= 1");
}

struct Scheduler::Job {
  RequestId id = 0;
  std::vector<int32_t> prompt;
  GenerateOptions opts;
  RequestCallbacks cb;
  std::unique_ptr<Generation> gen;
  KVCache* cache = nullptr;        // while it holds a slot
  int64_t n_prefilled = 0;         // prompt tokens in the cache
  int32_t next_token = -1;         // sampled, to run at the next step
  std::vector<TokenLogprob> prompt_logprobs;
  std::optional<FinishReason> end;  // set when it must leave
  std::string error;
  Clock::time_point t_submit, t_start, t_prefilled;
  bool prefilled() const { return n_prefilled == static_cast<int64_t>(prompt.size()); }
};

Scheduler::Scheduler(const Model& model, const SchedulerOptions& opts, ThreadPool* pool)
    : model_(model), opts_(opts), transformer_(model) {
  opts_.validate();
  const ModelConfig& c = model.config;
  slot_ctx_ = std::min(opts_.n_ctx / opts_.n_slots, c.max_seq_len);
  transformer_.pool = pool;
  for (int64_t s = 0; s < opts_.n_slots; ++s) caches_.push_back(std::make_unique<KVCache>(c, slot_ctx_));
  slots_.resize(static_cast<size_t>(opts_.n_slots));
  stats_.n_slots = opts_.n_slots;
  stats_.slot_ctx = slot_ctx_;
  stats_.max_queue = opts_.max_queue;
  stats_.kv_capacity = slot_ctx_ * opts_.n_slots;
  for (const auto& cache : caches_) stats_.kv_bytes += static_cast<double>(cache->bytes());
  stats_.n_layers = c.n_layers;
  stats_.n_experts = c.n_experts;
  stats_.expert_tokens.assign(static_cast<size_t>(c.n_layers * c.n_experts), 0);
  started_ = Clock::now();
}

Scheduler::~Scheduler() = default;

Scheduler::RequestId Scheduler::submit(std::vector<int32_t> prompt, const GenerateOptions& opts,
                                       RequestCallbacks cb) {
  const ModelConfig& c = model_.config;
  SMOE_CHECK(!prompt.empty(), "the prompt is empty: give at least one token");
  for (size_t i = 0; i < prompt.size(); ++i)
    SMOE_CHECK(prompt[i] >= 0 && prompt[i] < c.vocab_size, "prompt token id ", prompt[i],
               " at position ", i, " is out of range for this model (vocabulary of ", c.vocab_size, ")");
  SMOE_CHECK(static_cast<int64_t>(prompt.size()) <= slot_ctx_, "the prompt has ", prompt.size(),
             " tokens but the context holds ", slot_ctx_,
             " (use a larger context, at most ", c.max_seq_len,
             " for this model, or shorten the prompt)");
  auto job = std::make_unique<Job>();
  job->gen = std::make_unique<Generation>(c, model_.tokenizer.get(), opts, prompt);  // validates
  job->prompt = std::move(prompt);
  job->opts = opts;
  job->cb = std::move(cb);
  job->t_submit = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t free_slots = opts_.n_slots - running_;
  if (static_cast<int64_t>(queue_.size()) - free_slots >= opts_.max_queue) {
    ++stats_.rejected;
    throw QueueFull(cat("the server is busy: ", running_, " requests are running and ",
                        queue_.size(), " are waiting (the queue holds ", opts_.max_queue,
                        "); retry later"));
  }
  job->id = next_id_++;
  const RequestId id = job->id;
  queue_.push_back(std::move(job));
  ++stats_.submitted;
  cv_.notify_all();
  return id;
}

void Scheduler::cancel(RequestId id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (id > 0 && id < next_id_) cancelled_.insert(id);
  cv_.notify_all();
}

void Scheduler::cancel_all() {
  std::lock_guard<std::mutex> lock(mu_);
  cancel_all_ = true;
  cv_.notify_all();
}

void Scheduler::wake() {
  std::lock_guard<std::mutex> lock(mu_);
  cv_.notify_all();
}

bool Scheduler::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.empty() && running_ == 0;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SchedulerStats s = stats_;
  s.slots_busy = running_;
  s.queue_depth = static_cast<int64_t>(queue_.size());
  const auto now = Clock::now();
  int64_t recent = 0;
  for (const auto& [t, n] : recent_)
    if (now - t <= std::chrono::seconds(10)) recent += n;
  const double window = std::min(10.0, std::max(1e-3, ms_between(started_, now) / 1000.0));
  s.generated_per_s = static_cast<double>(recent) / window;
  return s;
}

// Under mu_: drops cancelled queued requests and moves queued ones into free slots.
void Scheduler::admit(std::vector<std::unique_ptr<Job>>& dropped) {
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (cancelled_.count((*it)->id)) {
      (*it)->end = FinishReason::Cancelled;
      dropped.push_back(std::move(*it));
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  for (size_t s = 0; s < slots_.size() && !queue_.empty(); ++s) {
    if (slots_[s]) continue;
    std::unique_ptr<Job> job = std::move(queue_.front());
    queue_.pop_front();
    job->cache = caches_[s].get();
    job->cache->reset();
    job->t_start = Clock::now();
    slots_[s] = std::move(job);
    ++running_;
  }
}

bool Scheduler::step() {
  std::vector<std::unique_ptr<Job>> leaving;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancel_all_) {
      for (const auto& job : queue_) cancelled_.insert(job->id);
      for (const auto& job : slots_)
        if (job) cancelled_.insert(job->id);
      cancel_all_ = false;
    }
    admit(leaving);
    for (auto& job : slots_)
      if (job && cancelled_.count(job->id)) job->end = FinishReason::Cancelled;
  }

  // This step's batch: every decoding slot's last token, then prompt chunks in arrival
  // order within the prefill budget.
  std::vector<BatchSeq> batch;
  std::vector<Job*> batch_jobs;
  for (auto& job : slots_)
    if (job && !job->end && job->prefilled()) {
      batch.push_back({job->cache, std::span<const int32_t>(&job->next_token, 1), false});
      batch_jobs.push_back(job.get());
    }
  std::vector<Job*> prefilling;
  for (auto& job : slots_)
    if (job && !job->end && !job->prefilled()) prefilling.push_back(job.get());
  std::sort(prefilling.begin(), prefilling.end(), [](Job* a, Job* b) { return a->id < b->id; });
  int64_t budget = opts_.max_prefill_tokens;
  for (Job* job : prefilling) {
    if (budget <= 0) break;
    const int64_t n = std::min<int64_t>(budget, static_cast<int64_t>(job->prompt.size()) - job->n_prefilled);
    budget -= n;
    batch.push_back({job->cache, std::span<const int32_t>(job->prompt.data() + job->n_prefilled, n),
                     job->opts.prompt_logprobs});
    batch_jobs.push_back(job);
  }

  int64_t n_prompt_tokens = 0, n_generated = 0;
  if (!batch.empty()) {
    try {
      transformer_.forward(batch, logits_);
      const int64_t V = model_.config.vocab_size;
      int64_t row = 0;
      for (size_t b = 0; b < batch.size(); ++b) {
        Job& job = *batch_jobs[b];
        const bool prefill = !job.prefilled();
        const int64_t n_tokens = static_cast<int64_t>(batch[b].tokens.size());
        const int64_t n_rows = batch[b].all_logits ? n_tokens : 1;
        if (prefill) n_prompt_tokens += n_tokens;
        n_generated += process(job, &logits_[static_cast<size_t>(row * V)], n_rows, prefill);
        row += n_rows;
      }
    } catch (const std::exception& e) {
      // forward() changes nothing when it throws; fail this step's requests only.
      for (Job* job : batch_jobs)
        if (!job->end) {
          job->end = FinishReason::Error;
          job->error = e.what();
        }
    }
  }

  // Finished jobs leave their slots now.
  for (auto& job : slots_)
    if (job && job->end) {
      job->cache->reset();
      leaving.push_back(std::move(job));
    }
  std::vector<RequestResult> results;
  for (auto& job : leaving) {
    job->gen->finish(*job->end);
    RequestResult r;
    r.reason = job->gen->reason();
    r.error = job->error;
    r.tail = job->gen->flush();
    r.text = job->gen->text();
    r.tokens = job->gen->tokens();
    r.n_prompt = static_cast<int64_t>(job->prompt.size());
    const auto now = Clock::now();
    if (job->cache) {
      r.queue_ms = ms_between(job->t_submit, job->t_start);
      const auto prefilled = job->prefilled() ? job->t_prefilled : now;
      r.prompt_ms = ms_between(job->t_start, prefilled);
      r.generate_ms = ms_between(prefilled, now);
    } else {
      r.queue_ms = ms_between(job->t_submit, now);
    }
    results.push_back(std::move(r));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!batch.empty()) {
      ++stats_.steps;
      stats_.prompt_tokens += static_cast<uint64_t>(n_prompt_tokens);
      stats_.generated_tokens += static_cast<uint64_t>(n_generated);
      const auto now = Clock::now();
      recent_.emplace_back(now, n_generated);
      while (!recent_.empty() && now - recent_.front().first > std::chrono::seconds(10)) recent_.pop_front();
      stats_.expert_tokens = transformer_.expert_tokens;
    }
    for (size_t i = 0; i < leaving.size(); ++i) {
      ++stats_.finished[finish_reason_name(results[i].reason)];
      if (leaving[i]->cache) --running_;
      cancelled_.erase(leaving[i]->id);
    }
    // Cancellations of requests that no longer exist are forgotten.
    std::set<RequestId> live;
    for (const auto& job : queue_) live.insert(job->id);
    for (const auto& job : slots_)
      if (job) live.insert(job->id);
    for (auto it = cancelled_.begin(); it != cancelled_.end();)
      it = live.count(*it) ? std::next(it) : cancelled_.erase(it);
    stats_.kv_tokens = 0;
    for (const auto& cache : caches_) stats_.kv_tokens += cache->n_past();
  }
  for (size_t i = 0; i < leaving.size(); ++i) {
    if (!leaving[i]->cb.on_done) continue;
    try {
      leaving[i]->cb.on_done(results[i]);
    } catch (const std::exception&) {
      // A failing callback must not take the other requests down.
    }
  }
  return !batch.empty() || !leaving.empty();
}

// Takes one forward pass's rows[n_rows, V] for `job`: records prompt logprobs, and once
// the prompt is in, samples the next token, reports it and applies the stop rules.
// Returns the number of tokens generated (0 or 1).
int64_t Scheduler::process(Job& job, const float* rows, int64_t n_rows, bool prefill) {
  const int64_t V = model_.config.vocab_size;
  const float* last = rows + (n_rows - 1) * V;
  if (prefill) {
    const int64_t n_prompt = static_cast<int64_t>(job.prompt.size());
    const int64_t start = job.n_prefilled;
    const int64_t n = job.cache->n_past() - start;  // tokens this step added
    if (job.opts.prompt_logprobs)
      for (int64_t i = 0; i < n; ++i)
        if (start + i + 1 < n_prompt)
          job.prompt_logprobs.push_back(token_logprob(rows + i * V, V, job.prompt[start + i + 1],
                                                      std::max<int32_t>(job.opts.logprobs, 0)));
    job.n_prefilled += n;
    if (!job.prefilled()) return 0;
    job.t_prefilled = Clock::now();
    try {
      if (job.cb.on_prompt && job.opts.prompt_logprobs) job.cb.on_prompt(job.prompt_logprobs);
    } catch (const std::exception&) {
      job.end = FinishReason::Cancelled;
      return 0;
    }
    if (job.gen->max_tokens() == 0) {
      job.end = FinishReason::Length;
      return 0;
    }
  }
  TokenOut out = job.gen->next(last);
  bool keep = true;
  try {
    if (job.cb.on_token) keep = job.cb.on_token(out);
  } catch (const std::exception&) {
    keep = false;
  }
  if (!keep) job.end = FinishReason::Cancelled;
  else if (job.gen->done()) job.end = job.gen->reason();
  else if (job.cache->n_past() >= slot_ctx_) job.end = FinishReason::Context;
  else job.next_token = out.id;
  return 1;
}

void Scheduler::run(const std::atomic<bool>& stop) {
  while (!stop.load()) {
    if (step()) continue;
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(100),
                 [&] { return stop.load() || !queue_.empty() || !cancelled_.empty(); });
  }
}

}  // namespace smoe
