// Each subcommand registers its options on the CLI11 app and returns the function that runs it.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace bitdelta::cli {

using Runner = std::function<int()>;

// Every register_* adds one subcommand to `app`, stores the function that runs it in `runner`,
// and returns the subcommand.
CLI::App* register_import_llama2c(CLI::App& app, Runner& runner);
CLI::App* register_info(CLI::App& app, Runner& runner);
CLI::App* register_tokenize(CLI::App& app, Runner& runner);
CLI::App* register_generate(CLI::App& app, Runner& runner);
CLI::App* register_logits(CLI::App& app, Runner& runner);
CLI::App* register_synth(CLI::App& app, Runner& runner);
CLI::App* register_compress(CLI::App& app, Runner& runner);
CLI::App* register_inspect(CLI::App& app, Runner& runner);
CLI::App* register_merge(CLI::App& app, Runner& runner);

}  // namespace bitdelta::cli
