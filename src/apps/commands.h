// commands.h: the smoe CLI's subcommands. Each register_* adds one subcommand to the
// CLI11 app; its callback does the work and throws smoe::Error on bad input.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace smoe {

class Tokenizer;
struct LoadOptions;

void register_run(CLI::App& app);
void register_logits(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_info(CLI::App& app);
void register_bench(CLI::App& app);
void register_routes(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_compare(CLI::App& app);
void register_passkey(CLI::App& app);
void register_mc(CLI::App& app);
void register_quantize(CLI::App& app);
void register_synth(CLI::App& app);
void register_train(CLI::App& app);
void register_serve(CLI::App& app);

// The model used when -m is not given: $SMOE_MODEL, else the build's default.
std::string default_model_path();
// Adds "-m,--model" bound to `path`, defaulting to default_model_path().
void add_model_option(CLI::App& cmd, std::string& path, const std::string& what = "MODEL");
// Adds "--load mmap|memory|auto" bound to opts.weights (set to auto) and "--no-repack".
void add_load_option(CLI::App& cmd, LoadOptions& opts);
// Parses "1,2,3" (commas and/or spaces) into ids; throws naming `what` on bad text.
std::vector<int32_t> parse_token_list(const std::string& text, const std::string& what);
// A tokenizer from a model (GGUF file, HF or Mistral folder) or a tokenizer.model file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace smoe
