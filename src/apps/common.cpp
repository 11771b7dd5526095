// common.cpp: helpers shared by the subcommands (model path, token lists, tokenizers).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "apps/commands.h"
#include "core/error.h"
#include "formats/gguf.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

std::string default_model_path() {
  if (const char* env = std::getenv("SMOE_MODEL"); env && *env) return env;
  return SMOE_DEFAULT_MODEL;
}

void add_model_option(CLI::App& cmd, std::string& path, const std::string& what) {
  path = default_model_path();
  cmd.add_option("-m,--model", path,
                 what + ": a GGUF file, a Hugging Face folder or a Mistral consolidated folder")
      ->capture_default_str();
}

void add_load_option(CLI::App& cmd, LoadOptions& opts) {
  opts.weights = WeightPlacement::kAuto;
  const std::map<std::string, WeightPlacement> names{{"mmap", WeightPlacement::kMapped},
                                                      {"memory", WeightPlacement::kMemory},
                                                      {"auto", WeightPlacement::kAuto}};
  cmd.add_option("--load", opts.weights,
                 "where the weights live: mmap (mapped files, nothing copied), memory (copied "
                 "into huge-page memory: faster decoding, about 1 s per 3 GB to load) or auto "
                 "(memory when the weights take at most 3/4 of available memory)")
      ->transform(CLI::CheckedTransformer(names))
      ->default_str("auto");
  cmd.add_flag("!--no-repack", opts.repack,
               "in memory, keep q8_0/q4_0/K-quant matrices in their file layout (by "
               "default they are repacked in 16-row groups for the AVX-512 VNNI kernels)");
  // A line on stderr about once a second while a copy into memory runs longer than that.
  using Clock = std::chrono::steady_clock;
  opts.progress = [start = Clock::time_point{}, last = Clock::time_point{}, shown = false](
                      size_t done, size_t total) mutable {
    const Clock::time_point now = Clock::now();
    if (start == Clock::time_point{}) start = now;  // the first call comes as the copy starts
    const double s = std::chrono::duration<double>(now - start).count();
    if (done < total && (s < 1.0 || now - last < std::chrono::seconds(1))) return;
    if (done == total && !shown) return;  // quick loads stay quiet
    last = now;
    shown = true;
    std::fprintf(stderr, "smoe: weights into memory: %.2f / %.2f GB (%.1f s)%s\n", static_cast<double>(done) / 1e9,
                 static_cast<double>(total) / 1e9, s, done == total ? ", done" : "");
  };
}

std::vector<int32_t> parse_token_list(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '[' || c == ']') {
      ++i;
      continue;
    }
    size_t j = i;
    if (text[j] == '-') ++j;
    while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
    SMOE_CHECK(j > i && std::isdigit(static_cast<unsigned char>(text[j - 1])), what,
               ": expected integer token ids separated by commas, found \"",
               text.substr(i, std::min<size_t>(20, text.size() - i)), "\"");
    SMOE_CHECK(j - i <= 10, what, ": token id \"", text.substr(i, j - i), "\" is too large");
    const long long v = std::stoll(text.substr(i, j - i));
    SMOE_CHECK(v >= 0 && v <= INT32_MAX, what, ": token id ", v, " is out of range");
    ids.push_back(static_cast<int32_t>(v));
    i = j;
  }
  return ids;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  SMOE_CHECK(fs::exists(path), path, ": no such file or directory");
  if (fs::is_directory(path)) {
    for (const char* name : {"tokenizer.model", "tokenizer.model.v1"})
      if (fs::exists(fs::path(path) / name)) return Tokenizer::from_spm_file((fs::path(path) / name).string());
    fail(path, ": folder has no tokenizer.model");
  }
  char magic[4] = {};
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    if (std::fread(magic, 1, 4, f) != 4) magic[0] = 0;
    std::fclose(f);
  }
  if (std::string(magic, 4) == "GGUF") return Tokenizer::from_gguf(GGUFFile(path));
  return Tokenizer::from_spm_file(path);  // a SentencePiece model, or a clear error
}

}  // namespace smoe
