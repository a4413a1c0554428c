#include "support/test_support.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "util/error.h"
#include "util/files.h"

namespace bitdelta::testing {

namespace fs = std::filesystem;

fs::path shared_asset(const std::string& relative) {
  const char* env = std::getenv("BITDELTA_SHARED_ASSETS");
  fs::path root = env != nullptr ? fs::path(env) : fs::path(BITDELTA_SHARED_ASSETS_DIR);
  fs::path p = root / relative;
  if (!fs::exists(p)) {
    ADD_FAILURE() << "missing shared asset " << p
                  << " (the tests expect ../shared/assets beside the checkout, or set "
                     "BITDELTA_SHARED_ASSETS)";
  }
  return p;
}

fs::path test_data(const std::string& relative) { return fs::path(BITDELTA_TEST_DATA_DIR) / relative; }

fs::path source_path(const std::string& relative) {
  return fs::path(BITDELTA_TEST_DATA_DIR).parent_path().parent_path() / relative;
}

ScratchDir::ScratchDir() {
  std::random_device rd;
  path_ = fs::temp_directory_path() / ("bitdelta-test-" + std::to_string(rd()) + std::to_string(rd()));
  fs::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

CommandResult run_command(const std::string& command) {
  ScratchDir tmp;
  std::string full = command + " >" + (tmp / "out").string() + " 2>" + (tmp / "err").string();
  int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_text(tmp / "out");
  r.err = read_text(tmp / "err");
  return r;
}

std::string cli_path() { return BITDELTA_CLI_PATH; }

CommandResult run_cli(const std::string& args) {
  return run_command(std::string("'") + BITDELTA_CLI_PATH + "' " + args);
}

std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string read_text(const fs::path& path) { return read_file(path); }

}  // namespace bitdelta::testing
