// bitdelta: one subcommand per user task. Errors from the library arrive as bitdelta::Error and
// leave here as a one-line message and a non-zero exit code.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "util/error.h"
#include "util/log.h"

namespace bitdelta::cli {

// The first word of the command line that should name a (sub)command and does not, as a message
// listing the ones that exist; nothing when the words name commands (or --help etc. come first).
std::optional<std::string> unknown_command(CLI::App& app, int argc, char** argv) {
  CLI::App* current = &app;
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') {
      if (current != &app) return std::nullopt;  // a command's own options follow
      continue;                                  // -v, --help, --version: no values
    }
    const auto subcommands = current->get_subcommands([](CLI::App*) { return true; });
    if (subcommands.empty()) return std::nullopt;
    CLI::App* next = nullptr;
    std::vector<std::string> names;
    for (CLI::App* sub : subcommands) {
      names.push_back(sub->get_name());
      if (sub->check_name(word)) next = sub;
    }
    if (next == nullptr) {
      const std::string where = current == &app ? "bitdelta" : "bitdelta " + current->get_name();
      return fmt::format("'{}' is not a command of {}; the commands are: {}", word, where,
                         fmt::join(names, ", "));
    }
    current = next;
  }
  return std::nullopt;
}

}  // namespace bitdelta::cli

int main(int argc, char** argv) {
  CLI::App app{
      "bitdelta: serve one base LLM personalized for many users, each user's fine-tune stored as "
      "a 1-bit delta (BitDelta).\n"
      "Run 'bitdelta <command> --help' for the options of a command."};
  app.set_version_flag("--version", "bitdelta 0.1.0");
  int verbosity = 0;
  app.add_flag("-v,--verbose", verbosity, "More log output (repeat for debug logs)");
  app.require_subcommand(1);
  app.fallthrough();

  std::map<CLI::App*, bitdelta::cli::Runner> runners;
  auto add = [&](CLI::App* (*register_command)(CLI::App&, bitdelta::cli::Runner&)) {
    bitdelta::cli::Runner runner;
    CLI::App* command = register_command(app, runner);
    runners[command] = std::move(runner);
  };
  add(bitdelta::cli::register_import_llama2c);
  add(bitdelta::cli::register_export_gguf);
  add(bitdelta::cli::register_info);
  add(bitdelta::cli::register_tokenize);
  add(bitdelta::cli::register_generate);
  add(bitdelta::cli::register_logits);
  add(bitdelta::cli::register_synth);
  add(bitdelta::cli::register_compress);
  add(bitdelta::cli::register_inspect);
  add(bitdelta::cli::register_merge);
  add(bitdelta::cli::register_eval);
  add(bitdelta::cli::register_finetune);
  add(bitdelta::cli::register_calibrate);
  add(bitdelta::cli::register_store);
  add(bitdelta::cli::register_serve);
  add(bitdelta::cli::register_analyze);
  add(bitdelta::cli::register_examples);
  add(bitdelta::cli::register_import_assistments);
  add(bitdelta::cli::register_personalize);
  add(bitdelta::cli::register_keys);
  add(bitdelta::cli::register_sign);
  add(bitdelta::cli::register_verify);
  add(bitdelta::cli::register_audit);
  add(bitdelta::cli::register_privacy);
  add(bitdelta::cli::register_safety_check);
  add(bitdelta::cli::register_screen);
  add(bitdelta::cli::register_receipt);
  add(bitdelta::cli::register_consent);

  // CLI11 answers a mistyped command with "A subcommand is required": name it instead.
  if (auto unknown = bitdelta::cli::unknown_command(app, argc, argv)) {
    std::fprintf(stderr, "error: %s\nRun with --help for more information.\n", unknown->c_str());
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  bitdelta::set_log_verbosity(verbosity);
  try {
    for (auto& [command, runner] : runners) {
      if (command->parsed()) return runner();
    }
  } catch (const bitdelta::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 3;
  }
  return 0;
}
