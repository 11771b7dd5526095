// thread_pool.h: a fixed set of worker threads for fork-join parallel loops.
// The calling thread takes part, so a pool of size N uses N threads in all; size 1 runs
// everything on the caller. Work is handed out in shrinking chunks from an atomic counter
// (large first, small last, so the threads finish together). Between jobs the threads spin
// for a short while before they sleep, so the back-to-back loops of a decode step (about 50
// per token) do not each pay for waking a sleeping thread.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace smoe {

class ThreadPool {
 public:
  // n_threads <= 0 means all hardware threads.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Calls fn(begin, end) over [0, n) in chunks of at least `grain` items, on all threads,
  // and returns when every chunk is done. Not reentrant: fn must not call parallel_for.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  static int hardware_threads();

 private:
  void worker_loop();
  void run_chunks();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  // generation_ changes (under mu_) when a job is posted; active_ counts the workers that
  // have not finished it.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> active_{0};
  std::atomic<bool> stop_{false};
  // The current job.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
  std::atomic<int64_t> next_{0};
};

// Runs fn over [0, n) on `pool`, or serially when pool is null. fn is passed by reference
// (a std::function around a reference_wrapper does not allocate), so hot loops such as
// decode's matmuls cost no heap allocation per call.
template <typename Fn>
inline void parallel_for(ThreadPool* pool, int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  if (pool && pool->size() > 1 && n > grain)
    pool->parallel_for(n, grain, std::function<void(int64_t, int64_t)>(std::ref(fn)));
  else fn(0, n);
}

}  // namespace smoe
