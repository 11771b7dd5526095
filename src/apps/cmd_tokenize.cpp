// cmd_tokenize.cpp: `smoe tokenize` (stdin text -> JSON array of ids, no BOS) and
// `smoe detokenize` (ids on stdin -> text).
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

namespace {

std::string read_stdin() {
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* tok = app.add_subcommand("tokenize", "read UTF-8 text on stdin, print its token ids (no BOS) as a JSON array");
  add_model_option(*tok, *path, "MODEL_OR_TOKENIZER (a tokenizer.model file also works)");
  tok->callback([path] {
    std::unique_ptr<Tokenizer> t = load_tokenizer(*path);
    nlohmann::json ids = t->encode(read_stdin(), /*add_bos=*/false);
    std::printf("%s\n", ids.dump().c_str());
  });

  auto dpath = std::make_shared<std::string>();
  CLI::App* detok = app.add_subcommand("detokenize", "read token ids on stdin (a JSON array or 1,2,3), print the text");
  add_model_option(*detok, *dpath, "MODEL_OR_TOKENIZER (a tokenizer.model file also works)");
  detok->callback([dpath] {
    std::unique_ptr<Tokenizer> t = load_tokenizer(*dpath);
    std::vector<int32_t> ids = parse_token_list(read_stdin(), "stdin");
    std::fputs(t->decode(ids).c_str(), stdout);
    std::fputs("\n", stdout);
  });
}

}  // namespace smoe
