// test_util.h: shared helpers for smoe's tests: fixture paths (skipping when the shared
// fixtures are absent), temporary files, and running the smoe CLI.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace smoe::test {

// Path under ../shared/fixtures; the calling test is skipped (GTEST_SKIP) by the macro
// below when the folder is absent.
inline std::string fixture(const std::string& rel) { return std::string(SMOE_FIXTURES_DIR) + "/" + rel; }
inline bool have_fixtures() { return std::filesystem::exists(SMOE_FIXTURES_DIR); }
#define SMOE_REQUIRE_FIXTURES()                                                             \
  do {                                                                                      \
    if (!::smoe::test::have_fixtures())                                                     \
      GTEST_SKIP() << "shared fixtures not found at " SMOE_FIXTURES_DIR " (test skipped)"; \
  } while (0)

// A fresh empty directory for this test under the build tree.
std::string temp_dir(const std::string& name);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

struct CmdResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the smoe binary with `args` (a shell-quoted string), optional stdin text.
CmdResult run_smoe(const std::string& args, const std::string& stdin_text = "");

}  // namespace smoe::test
