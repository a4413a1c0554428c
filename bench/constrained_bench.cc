// What constrained decoding costs per token, end to end: decode on the Qwen3-0.6B shape (real
// Qwen3 vocabulary) with the grammar's mask applied before every sampled token, against the same
// decode without one, measured alternately in the same run (issue 15: a constrained token may
// cost at most 10% more than a free one).
//
//   constrained_bench [--model DIR] [--tokens 64] [--rounds 3] [--threads N]
//
// Without --model it writes `synth --like qwen3-0.6b` (BF16) to a temporary folder. Each schema
// runs with a fresh compiled grammar (cold: every mask computed) and again with the one already
// used (warm: masks of repeated states cached, as the server keeps grammars per base). Sampling
// is at temperature 1 (a random-weight model under a grammar writes long strings and numbers).
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_util.h"
#include "constrain/matcher.h"
#include "model/generate.h"
#include "model/synth.h"
#include "serve/structured.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace fs = std::filesystem;
using namespace bitdelta;

int main(int argc, char** argv) try {
  std::string model_dir;
  int tokens = 64, rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) fail("{} needs a value", a);
      return std::string(argv[++i]);
    };
    if (a == "--model")
      model_dir = next();
    else if (a == "--tokens")
      tokens = std::stoi(next());
    else if (a == "--rounds")
      rounds = std::max(1, std::stoi(next()));
    else if (a == "--threads")
      setenv("BITDELTA_THREADS", next().c_str(), 1);
    else if (a == "--help" || a == "-h") {
      fmt::print(
          "usage: constrained_bench [--model DIR] [--tokens 64] [--rounds 3] [--threads N]\n");
      return 0;
    } else {
      fail("unknown argument '{}' (try --help)", a);
    }
  }
  const fs::path tmp = fs::temp_directory_path() / fmt::format("bitdelta-constrained-{}", getpid());
  if (model_dir.empty()) {
    SynthOptions so;
    so.like = "qwen3-0.6b";
    synth_model(so, tmp / "qwen3-0.6b");
    model_dir = (tmp / "qwen3-0.6b").string();
  }
  ThreadPool& pool = default_thread_pool();
  auto model = Transformer::load(model_dir);
  const Tokenizer tokenizer = Tokenizer::from_folder(model_dir);
  const ChatTemplate chat = ChatTemplate::detect(tokenizer, model->config().model_type);
  const std::vector<int32_t> prompt =
      tokenizer.encode(chat.render({{"user", "Describe an order as JSON.", ""}}));
  std::vector<int32_t> end_ids;
  for (const char* t : {"<|im_end|>", "<|endoftext|>"}) {
    if (auto id = tokenizer.token_id(t)) end_ids.push_back(*id);
  }
  const std::vector<std::pair<std::string, nlohmann::ordered_json>> schemas = {
      {"order (nested objects, arrays, enums, bounded numbers)", nlohmann::ordered_json::parse(R"({
         "type": "object", "properties": {
           "customer": {"type": "string"},
           "items": {"type": "array", "items": {"type": "object", "properties": {
               "sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1, "maximum": 99},
               "price": {"type": "number", "minimum": 0}},
             "required": ["sku", "qty", "price"], "additionalProperties": false}},
           "status": {"enum": ["new", "paid", "shipped"]}},
         "required": ["customer", "items", "status"], "additionalProperties": false})")},
      {"any JSON object (json_object)", nlohmann::ordered_json()},
  };
  fmt::print(
      "{}: {} prompt tokens, {} new tokens per run, {} threads; best of {} alternating "
      "rounds\n\n",
      fs::path(model_dir).filename().string(), prompt.size(), tokens, pool.size(), rounds);
  fmt::print(
      "| output | free ms/token | constrained ms/token (cold cache) | ratio | constrained "
      "ms/token (warm) | ratio |\n|---|---|---|---|---|---|\n");
  GenerateOptions unconstrained;
  unconstrained.max_tokens = tokens;
  unconstrained.sampling.temperature = 1.0f;
  unconstrained.sampling.seed = 7;
  unconstrained.stop_ids = end_ids;  // a finished document ends with one of them
  for (const auto& [label, schema] : schemas) {
    auto vocab = constrain::TokenVocab::from_tokenizer(tokenizer);
    auto grammar = schema.is_null() ? constrain::Grammar::any_json_object()
                                    : constrain::Grammar::from_json_schema(schema);
    auto per_token = [&](const GenerateOptions& o) {
      const GenerateResult r = generate(*model, &tokenizer, prompt, o, {}, pool);
      return r.tokens.size() > 1 ? 1e3 * r.decode_seconds / static_cast<double>(r.tokens.size() - 1)
                                 : 0.0;
    };
    double best_free = 1e30, best_cold = 1e30, best_warm = 1e30;
    for (int round = 0; round < rounds; ++round) {
      best_free = std::min(best_free, per_token(unconstrained));
      // Cold: a grammar compiled for this run alone; warm: the same one again, for another
      // document (another seed) that meets some of the same states.
      auto compiled = std::make_shared<const constrain::CompiledGrammar>(grammar, vocab, end_ids);
      GenerateOptions constrained = unconstrained;
      constrained.constraint = std::make_shared<GrammarConstraint>(compiled);
      best_cold = std::min(best_cold, per_token(constrained));
      constrained.sampling.seed = 8;
      best_warm = std::min(best_warm, per_token(constrained));
    }
    fmt::print("| {} | {:.1f} | {:.1f} | {:.3f} | {:.1f} | {:.3f} |\n", label, best_free, best_cold,
               best_cold / best_free, best_warm, best_warm / best_free);
    std::fflush(stdout);
  }
  fs::remove_all(tmp);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
