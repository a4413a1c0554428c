// bitdelta tokenize: text → token ids and back, with no BOS or other tokens added, so the output
// can be compared with any other implementation.
#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta::cli {

namespace {

// Accepts "1 2 3", "1,2,3" or a JSON array "[1, 2, 3]".
std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  const char* p = text.data();
  const char* end = p + text.size();
  auto is_separator = [](char c) {
    return c == ' ' || c == ',' || c == '\n' || c == '\t' || c == '\r' || c == '[' || c == ']';
  };
  while (p < end) {
    if (is_separator(*p)) {
      ++p;
      continue;
    }
    int32_t id = 0;
    auto [next, ec] = std::from_chars(p, end, id);
    if (ec != std::errc() || id < 0 || (next < end && !is_separator(*next))) {
      const char* stop = p;
      while (stop < end && !is_separator(*stop)) ++stop;
      fail("'{}' is not a token id; --decode expects non-negative integers separated by spaces "
           "or commas (or a JSON array)",
           std::string(p, stop));
    }
    ids.push_back(id);
    p = next;
  }
  return ids;
}

}  // namespace

CLI::App* register_tokenize(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "tokenize",
      "Print the token ids of a text (no BOS or special tokens added; added tokens written in the "
      "text, like <|im_start|>, are recognised), or with --decode the text of token ids");
  struct Options {
    std::string model, text, file;
    bool json = false, decode = false, no_special = false, skip_special = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model,
                  "Model or tokenizer folder (tokenizer.json [+ tokenizer_config.json], or GPT-2 "
                  "vocab.json + merges.txt)")
      ->required()
      ->check(CLI::ExistingDirectory);
  auto* text = cmd->add_option("--text", o->text, "The text (or, with --decode, the ids)");
  auto* file = cmd->add_option("--file", o->file, "Read the text (or ids) from this file; - for stdin");
  text->excludes(file);
  cmd->add_flag("--json", o->json, "Print a JSON array of ids (or, with --decode, a JSON string)");
  cmd->add_flag("--decode", o->decode, "Turn ids (\"1 2 3\", \"1,2,3\" or [1,2,3]) into text");
  cmd->add_flag("--no-special", o->no_special,
                "Treat special tokens written in the text as plain text");
  cmd->add_flag("--skip-special", o->skip_special, "With --decode: leave special tokens out");
  runner = [=] {
    if (o->text.empty() && o->file.empty() && cmd->count("--text") == 0) {
      fail("give the input with --text TEXT or --file FILE");
    }
    std::string input = o->text;
    if (!o->file.empty()) {
      if (o->file == "-") {
        char buffer[65536];
        size_t n;
        while ((n = std::fread(buffer, 1, sizeof buffer, stdin)) > 0) input.append(buffer, n);
      } else {
        input = read_file(o->file);
      }
    }
    Tokenizer tokenizer = Tokenizer::from_folder(o->model);
    if (o->decode) {
      std::string out = tokenizer.decode(parse_ids(input), o->skip_special);
      if (o->json) {
        fmt::print("{}\n", nlohmann::json(out).dump());
      } else {
        fmt::print("{}\n", out);
      }
      return 0;
    }
    std::vector<int32_t> ids = tokenizer.encode(input, !o->no_special);
    if (o->json) {
      fmt::print("{}\n", nlohmann::json(ids).dump());
    } else {
      fmt::print("{}\n", fmt::join(ids, " "));
    }
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
