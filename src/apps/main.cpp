// main.cpp: the smoe command-line tool: parses the subcommand and turns errors into a
// message on stderr and a non-zero exit.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "apps/commands.h"
#include "kernels/cpu_features.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"smoe: run, study and serve sparse mixture-of-experts (Mixtral-family) models"};
  app.require_subcommand(1);
  smoe::register_run(app);
  smoe::register_logits(app);
  smoe::register_tokenize(app);
  smoe::register_info(app);
  smoe::register_bench(app);
  smoe::register_routes(app);
  smoe::register_perplexity(app);
  smoe::register_compare(app);
  smoe::register_passkey(app);
  smoe::register_mc(app);
  smoe::register_quantize(app);
  smoe::register_synth(app);
  smoe::register_train(app);
  smoe::register_serve(app);
  try {
    smoe::cpu_cap();  // a bad SMOE_CPU fails here, before any kernel runs
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const smoe::Error& e) {
    std::fprintf(stderr, "smoe: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "smoe: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "smoe: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
