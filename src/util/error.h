// Errors. Bad user input and I/O failures throw bitdelta::Error with a message that says what is
// wrong and how to fix it; the CLI and HTTP boundaries catch it and turn it into an exit code or
// a 4xx. Programmer errors (broken invariants) use BD_CHECK, which names file:line.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace bitdelta {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws Error with a formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

[[noreturn]] void check_failed(const char* condition, const char* file, int line,
                               const std::string& detail);

}  // namespace bitdelta

// For invariants the code itself guarantees; never for user input.
#define BD_CHECK(cond, ...)                                                             \
  do {                                                                                  \
    if (!(cond)) [[unlikely]]                                                           \
      ::bitdelta::check_failed(#cond, __FILE__, __LINE__, ::fmt::format("" __VA_ARGS__)); \
  } while (0)
