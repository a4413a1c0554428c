// Helpers shared by the tests: where assets live, scratch folders, running the CLI.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

namespace bitdelta::testing {

// ../shared/assets (overridable with BITDELTA_SHARED_ASSETS). Skips the calling test with a clear
// message when a required asset is missing.
std::filesystem::path shared_asset(const std::string& relative);
// tests/data in the source tree (committed fixtures).
std::filesystem::path test_data(const std::string& relative);
// A file of the source tree (e.g. "docs/schemas/education.schema.json").
std::filesystem::path source_path(const std::string& relative);

// A fresh folder under the system temp dir, removed when the object dies.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built `bitdelta` CLI with a shell-quoted argument string.
CommandResult run_cli(const std::string& args);
// The built `bitdelta` executable, for commands that need a shell around it.
std::string cli_path();
// Runs a shell command, capturing stdout and stderr.
CommandResult run_command(const std::string& command);

void write_text(const std::filesystem::path& path, const std::string& text);

// The message of the bitdelta::Error that `f` throws, or "" when it throws none.
std::string error_message(const std::function<void()>& f);
std::string read_text(const std::filesystem::path& path);

}  // namespace bitdelta::testing
