// synth.h: random-weight models of any shape, built in memory (float32), for tests and
// benchmarks that need no downloaded weights.
#pragma once
#include <cstdint>
#include <memory>

#include "model/model.h"

namespace smoe {

// A model of shape `config` with weights drawn from N(0, 1/sqrt(fan_in)) (norm weights 1),
// deterministic in `seed`. No tokenizer.
std::unique_ptr<Model> synth_model(const ModelConfig& config, uint64_t seed);

// Makes `t` (a weight of `model`) writable: if it does not already live in the model's
// owned storage, copies it there. Returns the float32 data; t must be F32.
float* mutable_f32(Model& model, TensorView& t);

}  // namespace smoe
