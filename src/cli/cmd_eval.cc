// bitdelta eval: perplexity of a base, its fine-tune and the fine-tune's adapter on held-out data,
// and how much of the fine-tune the adapter keeps.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "ops/sign_matmul.h"
#include "train/eval.h"
#include "util/error.h"

namespace bitdelta::cli {

namespace {

void print_table(const EvalReport& r) {
  fmt::print("data: {}\n", r.data);
  fmt::print("{} target tokens in {} window(s) of up to {} tokens\n\n", r.target_tokens, r.windows,
             r.seq_len);
  const bool compare = r.base_vs_finetuned.has_value();
  fmt::print("{:<10} {:>8} {:>11}", "model", "NLL", "perplexity");
  if (compare) fmt::print(" {:>14} {:>12}", "KL(ft||model)", "top-1 = ft");
  fmt::print("\n");
  for (const auto& m : r.models) {
    fmt::print("{:<10} {:>8.4f} {:>11.3f}", m.name, m.nll, m.perplexity);
    const auto& a = m.name == "base" ? r.base_vs_finetuned : r.bitdelta_vs_finetuned;
    if (compare && m.name != "finetuned") fmt::print(" {:>14.5f} {:>11.1f}%", a->kl, 100 * a->top1);
    fmt::print("\n");
  }
  if (r.bitdelta_vs_finetuned) {
    fmt::print("\nquality retained: {}\n",
               r.quality_retained
                   ? fmt::format("{:.1f}% of the fine-tune's NLL gain", 100 * *r.quality_retained)
                   : std::string("n/a (the fine-tune scores the same as the base)"));
    if (r.quality_retained) {
      fmt::print(
          "  = (NLL base - NLL bitdelta) / (NLL base - NLL fine-tune), a ratio of gains on "
          "this data: above 100% means base + adapter\n    predicts it better than the "
          "fine-tune itself; KL and top-1 above say how closely it follows the fine-tune\n");
    }
  }
}

}  // namespace

CLI::App* register_eval(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "eval",
      "Score models on held-out data: mean next-token NLL (nats/token) and perplexity of the "
      "base, the fine-tune and the bitdelta model (base + adapter). With both --finetuned and "
      "--adapter, also KL(fine-tune || model) per token, top-1 agreement with the fine-tune, and "
      "the quality retained, (NLL base - NLL bitdelta) / (NLL base - NLL fine-tune). Text files "
      "are cut into consecutive windows; .jsonl files ({\"messages\"} or {\"prompt\", "
      "\"response\"} per line) are scored on the replies only");
  struct Options {
    std::string base, finetuned, adapter, data;
    DataArgs data_args;
    EvalOptions eval;
    bool json = false, exact_deltas = false;
    QuantFlags quant;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--base", o->base, "Base model folder")->required();
  cmd->add_option("--finetuned", o->finetuned, "Fine-tuned model folder (same architecture)");
  cmd->add_option("--adapter", o->adapter,
                  "BitDelta adapter (.bdelta) made against --base: scored as the 'bitdelta' model");
  cmd->add_option("--data", o->data,
                  "Evaluation data: a text file, or .jsonl with one conversation or "
                  "prompt/response pair per line")
      ->required();
  add_data_options(cmd, o->data_args);
  cmd->add_option("--seq-len", o->eval.seq_len, "Tokens per window")
      ->capture_default_str()
      ->check(positive());
  cmd->add_option("--windows", o->eval.max_windows, "Windows (or JSONL examples) to score; 0 = all")
      ->capture_default_str()
      ->check(non_negative());
  cmd->add_option("--batch", o->eval.batch, "Windows per forward pass")
      ->capture_default_str()
      ->check(positive());
  cmd->add_flag("--json", o->json, "Print one JSON object instead of a table");
  add_precision_flags(cmd, o->exact_deltas);
  add_quant_flags(cmd, o->quant);
  cmd->add_option("--threads", o->threads, "Worker threads (default: all cores)");
  runner = [=] {
    if (o->threads > 0) set_default_threads(o->threads);
    set_exact_sign_pass(o->exact_deltas);  // default: the adapter scored exactly as it is served
    EvalInputs inputs;
    inputs.base = o->base;
    inputs.base_quant = quant_options(o->quant);
    if (!o->finetuned.empty()) inputs.finetuned = o->finetuned;
    if (!o->adapter.empty()) inputs.adapter = o->adapter;
    inputs.data = o->data;
    inputs.data_options = o->data_args.options();

    // Quiet unless it takes a while; progress goes to stderr so stdout stays parseable.
    EvalOptions options = o->eval;
    const auto start = std::chrono::steady_clock::now();
    bool shown = false;
    options.progress = [&](int64_t done, int64_t total) {
      if (std::chrono::steady_clock::now() - start < std::chrono::seconds(2)) return;
      fmt::print(stderr, "\reval: batch {}/{}", done, total);
      std::fflush(stderr);
      shown = true;
    };
    EvalReport report = evaluate_files(inputs, options, default_thread_pool());
    if (shown) fmt::print(stderr, "\n");
    if (o->json) {
      fmt::print("{}\n", to_json(report).dump(2));
    } else {
      print_table(report);
    }
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
