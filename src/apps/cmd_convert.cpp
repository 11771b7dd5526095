// cmd_convert.cpp: `smoe quantize IN OUT --type T` (any supported model to GGUF of type T)
// and `smoe synth --config CONFIG --type T --out FILE` (random weights of any shape).
#include <cstdio>

#include "apps/commands.h"
#include "core/error.h"
#include "model/config.h"
#include "model/convert.h"

namespace smoe {

namespace {

DType parse_type(const std::string& name) {
  std::optional<DType> t = dtype_from_name(name);
  SMOE_CHECK(t.has_value(), "--type ", name, " is not a type smoe can write (expected one of: ",
             supported_dtype_names(), ")");
  return *t;
}

struct QuantizeArgs {
  std::string in, out, type = "q8_0";
  int threads = 0;
};

struct SynthArgs {
  std::string config, out, type = "f32", tokenizer;
  int64_t layers = 0;
  uint64_t seed = 0;
  int threads = 0;
};

}  // namespace

void register_quantize(CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* cmd = app.add_subcommand("quantize", "convert a model (any supported format) to GGUF of another type");
  cmd->add_option("IN", a->in, "model: GGUF file, Hugging Face or Mistral folder")->required();
  cmd->add_option("OUT", a->out, "GGUF file to write")->required();
  cmd->add_option("--type", a->type, "f32, f16, bf16, q8_0, q4_0, q2_K, q3_K, q4_K, q5_K or q6_K")->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "threads (0: all cores)");
  cmd->callback([a] {
    const DType t = parse_type(a->type);
    std::unique_ptr<Model> model = load_model(a->in);
    ThreadPool pool(a->threads);
    quantize_model(*model, a->out, t, &pool);
    std::fprintf(stderr, "smoe quantize: wrote %s (%s)\n", a->out.c_str(), dtype_name(t));
  });
}

void register_synth(CLI::App& app) {
  auto a = std::make_shared<SynthArgs>();
  CLI::App* cmd = app.add_subcommand("synth", "write a random-weight model of any shape as GGUF");
  cmd->add_option("--config", a->config, "config.json (Hugging Face) or params.json (Mistral)")->required();
  cmd->add_option("--out", a->out, "GGUF file to write")->required();
  cmd->add_option("--type", a->type, "f32, f16, bf16, q8_0, q4_0, q2_K, q3_K, q4_K, q5_K or q6_K")->capture_default_str();
  cmd->add_option("--layers", a->layers, "keep only the first N layers (0: all)");
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  cmd->add_option("--tokenizer", a->tokenizer,
                  "SentencePiece tokenizer.model whose vocabulary is embedded (its size must be the "
                  "config's vocab_size); without it the file has no vocabulary, which llama.cpp refuses");
  cmd->add_option("-t,--threads", a->threads, "threads (0: all cores)");
  cmd->callback([a] {
    const DType t = parse_type(a->type);
    const std::string kind = detect_format(a->config);
    ModelConfig c;
    if (kind == "hf-config") c = config_from_hf_json(a->config);
    else if (kind == "mistral-config") c = config_from_mistral_json(a->config);
    else fail(a->config, ": expected a config.json or params.json file, found a ", kind, " model");
    SMOE_CHECK(a->layers >= 0, "--layers ", a->layers, " must be >= 0");
    if (a->layers > 0) c.n_layers = std::min(c.n_layers, a->layers);
    ThreadPool pool(a->threads);
    std::unique_ptr<Tokenizer> tok;
    if (!a->tokenizer.empty()) tok = Tokenizer::from_spm_file(a->tokenizer);
    synth_gguf(c, a->seed, t, a->out, &pool, std::move(tok));
    std::fprintf(stderr, "smoe synth: wrote %s (%s, %s)\n", a->out.c_str(), c.summary().c_str(),
                 dtype_name(t));
  });
}

}  // namespace smoe
