// report.h: what a training run shows and leaves behind besides the model: the live
// progress line, the CSV log, and SVG plots (training/validation loss; expert load per
// layer over training), drawn by hand as SVG text.
#pragma once
#include <string>
#include <vector>

#include "train/trainer.h"

namespace smoe::train {

// "step 120/3000 | loss 3.412 | val 3.550 | 1234 tok/s | 12:34 elapsed, 45:00 left"
std::string progress_line(const StepRecord& r, int64_t total_steps, double last_val);

// Rewrites `path` with one row per record: step, lr, loss, aux, z, grad_norm, tokens_per_s,
// elapsed_s, val_loss (empty when not measured), then load_l{L}_e{E} shares.
void write_csv(const std::vector<StepRecord>& history, int64_t n_layers, int64_t n_experts, const std::string& path);

// Training loss (smoothed) and validation loss against step.
void write_loss_svg(const std::vector<StepRecord>& history, const std::string& path);
// One panel per layer: each expert's share of routed tokens against step (smoothed).
void write_expert_load_svg(const std::vector<StepRecord>& history, int64_t n_layers, int64_t n_experts,
                           const std::string& path);

}  // namespace smoe::train
