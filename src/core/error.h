// error.h: smoe's exception type and the helpers that build clear error messages.
// Every failure a user can cause (bad files, bad arguments) throws smoe::Error with a
// message naming what was wrong and what was expected; apps turn it into exit code 1.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace smoe {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Concatenates any streamable arguments: cat("tensor ", name, " has ", n, " rows").
template <typename... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

// Throws smoe::Error with the concatenated message.
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(cat(std::forward<Args>(args)...));
}

}  // namespace smoe

// Checks a condition that depends on user input; throws smoe::Error with the message otherwise.
#define SMOE_CHECK(cond, ...)              \
  do {                                     \
    if (!(cond)) ::smoe::fail(__VA_ARGS__); \
  } while (0)
