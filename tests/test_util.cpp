// test_util.cpp: helpers shared by the tests (see test_util.h).
#include "test_util.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace smoe::test {

std::string temp_dir(const std::string& name) {
  // Under a folder named after the running test (and SMOE_CPU: ctest runs the suite once per
  // cap, see CMakeLists.txt): ctest runs tests in parallel processes, and two tests asking for
  // the same name must not share (and race on) one folder.
  std::filesystem::path p = std::filesystem::path(SMOE_TEST_TMP);
  if (const char* cap = std::getenv("SMOE_CPU"); cap && *cap) p /= std::string("cpu-") + cap;
  if (const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info())
    p /= std::string(info->test_suite_name()) + "." + info->name();
  p /= name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

CmdResult run_command(const std::string& cmd_line, const std::string& stdin_text) {
  std::string dir = temp_dir("cmd_" + std::to_string(::getpid()));
  std::string in = dir + "/stdin", out = dir + "/stdout", err = dir + "/stderr";
  write_file(in, stdin_text);
  std::string cmd = cmd_line + " <'" + in + "' >'" + out + "' 2>'" + err + "'";
  int status = std::system(cmd.c_str());
  CmdResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

CmdResult run_smoe(const std::string& args, const std::string& stdin_text) {
  return run_command(std::string("'") + SMOE_BINARY + "' " + args, stdin_text);
}

}  // namespace smoe::test
