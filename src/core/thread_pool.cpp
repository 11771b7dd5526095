// thread_pool.cpp: fork-join worker pool (see thread_pool.h).
#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>

namespace smoe {

int ThreadPool::hardware_threads() {
  return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = hardware_threads();
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

namespace {

// Spins until done() or about 150 microseconds have passed; returns done(). No pause
// instruction: under KVM a pausing loop makes the hypervisor deschedule the virtual CPU
// (pause-loop exiting), which made decode 10-15% slower than sleeping at once here.
template <typename Done>
bool spin_until(Done done) {
  using Clock = std::chrono::steady_clock;
  const auto until = Clock::now() + std::chrono::microseconds(150);
  for (;;) {
    for (int i = 0; i < 256; ++i)
      if (done()) return true;
    if (Clock::now() >= until) return done();
  }
}

}  // namespace

void ThreadPool::run_chunks() {
  // Guided: each chunk takes 1/(2 x threads) of what is left, at least the grain, so the
  // first chunks are large (few atomic operations) and the last ones small (the threads
  // finish together). Chunk boundaries depend only on where a chunk starts, so they are
  // the same in every run.
  const int64_t divisor = 2 * static_cast<int64_t>(size());
  int64_t begin = next_.load(std::memory_order_relaxed);
  for (;;) {
    if (begin >= n_) return;
    const int64_t end = std::min(n_, begin + std::max(grain_, (n_ - begin + divisor - 1) / divisor));
    if (next_.compare_exchange_weak(begin, end, std::memory_order_relaxed)) {
      (*fn_)(begin, end);
      begin = next_.load(std::memory_order_relaxed);
    }
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    const auto posted = [&] { return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; };
    if (!spin_until(posted)) {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, posted);
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    run_chunks();
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);  // the caller may be between its check and its wait
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  // Every worker has finished the previous job (active_ was 0), so none reads these now.
  fn_ = &fn;
  n_ = n;
  grain_ = std::max<int64_t>(grain, 1);
  next_.store(0);
  active_.store(static_cast<int>(workers_.size()));
  {
    std::lock_guard<std::mutex> lock(mu_);  // a worker checks generation_ under mu_ before it sleeps
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_cv_.notify_all();
  run_chunks();
  const auto finished = [&] { return active_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(finished)) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, finished);
  }
  fn_ = nullptr;
}

}  // namespace smoe
