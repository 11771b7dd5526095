// cmd_bench.cpp: `smoe bench`: prompt-processing and generation tokens/s (median and
// spread over repetitions), peak memory, and the decode roofline.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "model/model.h"
#include "core/error.h"
#include "kernels/cpu_features.h"
#include "kernels/gemm_amx.h"
#include "kernels/gemm_amx_kquant.h"
#include "kernels/gemm_int8.h"
#include "runtime/bench.h"

namespace smoe {

namespace {

struct BenchArgs {
  std::string model;
  LoadOptions load;
  BenchOptions opts;
  int threads = 0;
  bool json = false;
};

void run_bench_cmd(const BenchArgs& a) {
  SMOE_CHECK(a.threads >= 0 && a.threads <= 1024, "-t ", a.threads,
             " is out of range (expected 1..1024; 0 = all cores)");
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Model> model = load_model(a.model, a.load);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const char* placement = model->weights_in_memory ? "memory" : "mmap";
  ThreadPool pool(a.threads);
  const bool amx = amx_available(), amx_int8 = amx_int8_available(), vnni = int8_gemm_fast();
  // Repacked (x16) matrices take the VNNI and AMX-INT8 kernels; the file layout (mapped,
  // --no-repack) takes the int8 row kernels (K-quants: per-256 activations).
  bool repacked = false;
  for (const TensorView* t : model->all_tensors()) repacked = repacked || t->x16;
  std::fprintf(stderr, "smoe bench: %s, %d threads, pp %lld, tg %lld, %d reps; weights in %s%s "
               "(loaded in %.2f s); SIMD %s (cap %s)%s%s%s\n",
               model->config.summary().c_str(), pool.size(), (long long)a.opts.n_prompt,
               (long long)a.opts.n_gen, a.opts.reps, placement, repacked ? ", repacked" : ", file layout", load_s,
               simd_target(), cpu_cap_name(cpu_cap()),
               vnni ? "; AVX-512 VNNI int8 kernels" : avx2_allowed() ? "; AVX2 int8 kernels" : "",
               amx ? "; AMX-BF16 tiles for f16/bf16 batches" : "",
               amx_int8 && repacked ? "; AMX-INT8 tiles for K-quant batches" : "");
  BenchResult r = run_bench(*model, pool, a.opts);
  auto stats = [](const Stats& s) {
    return nlohmann::json{{"median", s.median}, {"min", s.min}, {"max", s.max}};
  };
  nlohmann::json j = {
      {"model", a.model},
      {"threads", pool.size()},
      {"n_prompt", a.opts.n_prompt},
      {"n_gen", a.opts.n_gen},
      {"reps", a.opts.reps},
      {"weights", placement},
      {"repacked", repacked},
      {"simd_target", simd_target()},
      {"cpu_cap", cpu_cap_name(cpu_cap())},
      {"vnni", vnni},
      {"amx", amx},
      {"amx_int8", amx_int8},
      {"load_s", load_s},
      {"pp_tokens_per_s", r.pp_tokens_per_s.median},
      {"tg_tokens_per_s", r.tg_tokens_per_s.median},
      {"pp", stats(r.pp_tokens_per_s)},
      {"tg", stats(r.tg_tokens_per_s)},
      {"bytes_per_token", r.bytes_per_token},
      {"weight_bytes_per_token", r.weight_bytes_per_token},
      {"read_GBps", r.read_GBps},
      {"weights_read_GBps", r.weights_read_GBps},
      {"kernel_read_GBps", r.kernel_read_GBps},
      {"roofline_fraction", r.roofline_fraction},
      {"peak_rss_bytes", r.peak_rss_bytes},
  };
  std::printf("prompt processing: %10.2f tokens/s (min %.2f, max %.2f)\n", r.pp_tokens_per_s.median,
              r.pp_tokens_per_s.min, r.pp_tokens_per_s.max);
  std::printf("generation:        %10.2f tokens/s (min %.2f, max %.2f)\n", r.tg_tokens_per_s.median,
              r.tg_tokens_per_s.min, r.tg_tokens_per_s.max);
  std::printf("bytes per token:   %10.3f MB (weights %.3f MB)\n", r.bytes_per_token / 1e6,
              r.weight_bytes_per_token / 1e6);
  std::printf("read bandwidth:    %10.2f GB/s (reading the model's weights: %.2f GB/s)\n", r.read_GBps,
              r.weights_read_GBps);
  std::printf("decode roofline:   %10.1f %% of the bandwidth bound\n", 100 * r.roofline_fraction);
  if (r.read_GBps > 0)
    std::printf("decode kernels:    %10.2f GB/s over every matrix at one token (%.1f %% of the bound)\n",
                r.kernel_read_GBps, 100 * r.kernel_read_GBps / r.read_GBps);
  std::printf("peak memory:       %10.1f MiB\n", r.peak_rss_bytes / (1 << 20));
  if (a.opts.profile && a.opts.n_gen > 0) {
    const ForwardProfile& p = r.decode_profile;
    const double steps = static_cast<double>(std::max<int64_t>(1, p.calls)), total = p.total_seconds();
    std::printf("decode profile:    %lld steps at %.2f tokens/s, %.3f ms a step\n", (long long)p.calls,
                r.profile_tokens_per_s, 1e3 * total / steps);
    std::printf("  %-14s %9s %7s %10s %8s\n", "phase", "ms/step", "share", "MB/step", "GB/s");
    nlohmann::json phases = nlohmann::json::object();
    for (int i = 0; i < ForwardProfile::kPhases; ++i) {
      const double ms = 1e3 * p.seconds[i] / steps, mb = p.bytes[i] / steps / 1e6;
      const double gbps = p.seconds[i] > 0 ? p.bytes[i] / p.seconds[i] / 1e9 : 0;
      const double share = total > 0 ? p.seconds[i] / total : 0;
      if (mb > 0)
        std::printf("  %-14s %9.3f %6.1f%% %10.2f %8.2f\n", ForwardProfile::name(i), ms, 100 * share, mb, gbps);
      else
        std::printf("  %-14s %9.3f %6.1f%% %10s %8s\n", ForwardProfile::name(i), ms, 100 * share, "-", "-");
      phases[ForwardProfile::name(i)] = {{"ms_per_step", ms}, {"share", share}, {"weight_MB_per_step", mb},
                                         {"GBps", gbps}};
    }
    j["decode_profile"] = {{"steps", p.calls}, {"tokens_per_s", r.profile_tokens_per_s}, {"phases", phases}};
  }
  if (a.json) std::printf("%s\n", j.dump().c_str());
}

}  // namespace

void register_bench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "measure prompt and generation speed and the decode roofline");
  add_model_option(*cmd, args->model);
  add_load_option(*cmd, args->load);
  cmd->add_option("-p,--n-prompt", args->opts.n_prompt, "prompt tokens per pass")->capture_default_str();
  cmd->add_option("-n,--n-gen", args->opts.n_gen, "generated tokens")->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "threads (0: all cores)")->capture_default_str();
  cmd->add_option("--reps", args->opts.reps, "repetitions")->capture_default_str();
  cmd->add_option("--warmup", args->opts.warmup, "untimed passes before the timed ones")->capture_default_str();
  cmd->add_option("--seed", args->opts.seed, "seed for the random token ids")->capture_default_str();
  cmd->add_flag("--json", args->json, "also print one JSON object as the last line");
  cmd->add_flag("--profile", args->opts.profile,
                "after the timed runs, generate n-gen more tokens timing each phase of a decode step");
  cmd->callback([args] { run_bench_cmd(*args); });
}

}  // namespace smoe
