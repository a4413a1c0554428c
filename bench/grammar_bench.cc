// Constrained decoding's cost per token on the real Qwen3 vocabulary (151,669 tokens): for a few
// schemas, valid documents are tokenized and fed to a GrammarMatcher token by token, timing the
// allowed-token mask before each token (and before the end token). "cold" starts each schema
// with an empty mask cache (a schema's first request); "warm" runs the same documents again on
// the filled cache (the same schema in later requests). Also: loading the vocabulary and
// compiling the schemas. Target (docs/structured-output.md): well under 5 ms per token on
// average, i.e. a few percent of a ~70 ms Qwen3-0.6B decode step at 2 threads.
//
//   grammar_bench [--tokenizer DIR] [--repeat 3]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "constrain/grammar.h"
#include "constrain/matcher.h"
#include "constrain/token_vocab.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

using namespace bitdelta;
using namespace bitdelta::constrain;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

struct Workload {
  const char* name;
  std::shared_ptr<const Grammar> grammar;
  std::vector<std::string> documents;
};

std::vector<Workload> workloads() {
  std::vector<Workload> w;
  w.push_back(
      {"product (object, enums, bounds)",
       Grammar::from_json_schema_text(R"J({
      "type": "object",
      "properties": {
        "name": {"type": "string", "maxLength": 80},
        "sku": {"type": "string"},
        "price": {"type": "number", "exclusiveMinimum": 0, "maximum": 100000},
        "currency": {"enum": ["USD", "EUR", "GBP", "JPY"]},
        "in_stock": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
        "rating": {"type": ["number", "null"], "minimum": 0, "maximum": 5},
        "description": {"type": "string"}
      },
      "required": ["name", "price", "currency", "in_stock"]
    })J"),
       {R"J({"name": "Wireless noise-cancelling headphones", "sku": "WH-1000XM5-B", "price": 349.99, "currency": "USD", "in_stock": true, "tags": ["audio", "bluetooth", "travel"], "rating": 4.7, "description": "Industry-leading noise cancellation with two processors and eight microphones, up to 30 hours of battery life, and a lightweight design for all-day comfort."})J",
        "{\n  \"name\": \"Chef's knife, 8 inch\",\n  \"price\": 89.5,\n  \"currency\": \"EUR\",\n  "
        "\"in_stock\": false,\n  \"tags\": [\n    \"kitchen\",\n    \"steel\"\n  ],\n  \"rating\": "
        "null,\n  \"description\": \"Forged from a single piece of high-carbon stainless steel. "
        "Hand wash only; the blade is sharpened to a 15° angle per side — \\\"razor sharp\\\" out "
        "of the box.\"\n}",
        R"J({"name":"USB-C cable (2 m)","sku":"CBL-2M","price":12,"currency":"GBP","in_stock":true,"tags":[],"description":"Braided nylon; 100 W power delivery; 10 Gbit/s data. 中文说明：编织尼龙线。"})J"}});
  w.push_back({"tool call (Qwen3 <tool_call>, two tools)",
               Grammar::one_of({{GrammarPart::literal("<tool_call>\n"),
                                 GrammarPart::json_schema(nlohmann::ordered_json::parse(R"J({
        "type": "object",
        "properties": {"name": {"const": "get_weather"},
          "arguments": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14}},
            "required": ["city"]}},
        "required": ["name", "arguments"]})J")),
                                 GrammarPart::literal("\n</tool_call>")},
                                {GrammarPart::literal("<tool_call>\n"),
                                 GrammarPart::json_schema(nlohmann::ordered_json::parse(R"J({
        "type": "object",
        "properties": {"name": {"const": "search_web"},
          "arguments": {"type": "object", "properties": {
            "query": {"type": "string", "minLength": 1},
            "max_results": {"type": "integer", "minimum": 1, "maximum": 50}},
            "required": ["query"]}},
        "required": ["name", "arguments"]})J")),
                                 GrammarPart::literal("\n</tool_call>")}}),
               {"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"San "
                "Francisco, CA\", \"unit\": \"celsius\", \"days\": 3}}\n</tool_call>",
                "<tool_call>\n{\"name\": \"search_web\", \"arguments\": {\"query\": \"latest "
                "results of the 2024 Tour de France stage 17, with times and the general "
                "classification\", \"max_results\": 10}}\n</tool_call>"}});
  w.push_back(
      {"json_object (any object)",
       Grammar::any_json_object(),
       {R"J({"summary": "The meeting moved the launch to March; marketing needs two more weeks for the campaign assets.", "action_items": [{"owner": "Dana", "task": "update the roadmap", "due": "2024-02-01"}, {"owner": "Lee", "task": "book the venue", "due": null}], "sentiment": 0.35, "confidential": false})J",
        "{\n  \"answer\": 42,\n  \"reasoning\": \"Six times seven is forty-two. Nothing else to "
        "add; this is a short text with some punctuation: commas, periods, and (parentheses).\",\n "
        " \"sources\": []\n}"}});
  w.push_back(
      {"bounded strings and numbers",
       Grammar::from_json_schema_text(R"J({
      "type": "object",
      "properties": {
        "title": {"type": "string", "minLength": 5, "maxLength": 60},
        "summary": {"type": "string", "maxLength": 280},
        "score": {"type": "number", "minimum": -1, "maximum": 1},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "keywords": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 5}
      },
      "required": ["title", "summary", "score", "year", "keywords"]
    })J"),
       {R"J({"title": "A study of grammar-constrained decoding", "summary": "We compile JSON Schema into a pushdown automaton and cache token masks by parser state; most positions repeat a state, so masks cost a copy.", "score": 0.875, "year": 2024, "keywords": ["grammars", "decoding", "json schema"]})J",
        R"J({"title":"Short","summary":"","score":-0.5,"year":1999,"keywords":["x"]})J"}});
  w.push_back(
      {"additional properties (keys must differ from declared ones)",
       Grammar::from_json_schema_text(R"J({
      "type": "object",
      "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
      "required": ["name"],
      "additionalProperties": {"type": "number"}})J"),
       {R"J({"name": "cluster-a", "namespace": "prod", "cpu_load": 0.73, "memory_gb": 12.5, "nodes": 14, "name_servers": 3, "names": 2})J",
        "{\n  \"name\": \"edge\",\n  \"nam\": 1,\n  \"latency_p99_ms\": 41.25,\n  "
        "\"errors_per_minute\": 0\n}"}});
  w.push_back(
      {"recursive tree ($ref)",
       Grammar::from_json_schema_text(R"J({
      "$defs": {"node": {"type": "object", "properties": {
        "label": {"type": "string"}, "weight": {"type": "number"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["label"]}},
      "$ref": "#/$defs/node"})J"),
       {R"J({"label": "root", "weight": 1.0, "children": [{"label": "left", "children": [{"label": "left.left", "weight": 0.25}, {"label": "left.right"}]}, {"label": "right", "weight": -3.5e2, "children": []}]})J"}});
  return w;
}

struct Stats {
  std::vector<double> ms;
  void add(double v) { ms.push_back(v); }
  std::string line() {
    if (ms.empty()) return "no samples";
    std::sort(ms.begin(), ms.end());
    double sum = 0;
    for (double v : ms) sum += v;
    const double p99 = ms[std::min(ms.size() - 1, size_t(0.99 * double(ms.size())))];
    return fmt::format("mean {:7.3f}  p99 {:7.3f}  max {:7.3f} ms/token  ({} tokens)",
                       sum / double(ms.size()), p99, ms.back(), ms.size());
  }
};

// Feeds each document's tokens, timing the mask before each one; returns false on a mismatch.
void run_documents(const std::shared_ptr<const CompiledGrammar>& compiled,
                   const std::vector<std::vector<int32_t>>& documents, int32_t end_token,
                   Stats& masks, Stats& accepts) {
  TokenMask mask;
  for (const auto& tokens : documents) {
    GrammarMatcher m(compiled);
    for (size_t i = 0; i <= tokens.size(); ++i) {
      const int32_t t = i < tokens.size() ? tokens[i] : end_token;
      auto start = Clock::now();
      m.fill_mask(mask);
      masks.add(ms_since(start));
      if (!mask.test(t)) fail("token {} of a valid document is masked out", i);
      start = Clock::now();
      if (!m.accept(t)) fail("token {} of a valid document is refused", i);
      accepts.add(ms_since(start));
    }
  }
}

}  // namespace

int main(int argc, char** argv) try {
  fs::path tokenizer_dir = fs::path(BITDELTA_SHARED_ASSETS_DIR) / "tokenizers/qwen3";
  int repeat = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc) {
      tokenizer_dir = argv[++i];
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = std::stoi(argv[++i]);
    } else {
      std::printf("usage: grammar_bench [--tokenizer DIR] [--repeat 3]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  const Tokenizer tokenizer = Tokenizer::from_folder(tokenizer_dir);
  auto start = Clock::now();
  auto vocab = TokenVocab::from_tokenizer(tokenizer);
  const double vocab_ms = ms_since(start);
  start = Clock::now();
  vocab->prepare_string_tables();
  const double tables_ms = ms_since(start);
  fmt::print(
      "vocabulary: {} tokens, {} trie nodes; trie built in {:.1f} ms, string tables in "
      "{:.1f} ms (once per tokenizer)\n",
      vocab->size(), vocab->trie().byte.size(), vocab_ms, tables_ms);
  const int32_t end_token = *tokenizer.token_id("<|im_end|>");

  start = Clock::now();
  auto loads = workloads();
  fmt::print("compiling the {} grammars: {:.2f} ms in all\n\n", loads.size(), ms_since(start));
  Stats all_cold, all_warm, all_accept;
  for (Workload& w : loads) {
    std::vector<std::vector<int32_t>> docs;
    size_t tokens = 0;
    for (const std::string& d : w.documents) {
      docs.push_back(tokenizer.encode(d));
      tokens += docs.back().size() + 1;
    }
    Stats cold, warm, accepts;
    for (int r = 0; r < repeat; ++r) {
      auto compiled = std::make_shared<const CompiledGrammar>(w.grammar, vocab,
                                                              std::vector<int32_t>{end_token});
      Stats c, a;
      run_documents(compiled, docs, end_token, c, a);
      for (double v : c.ms) cold.add(v);
      for (double v : a.ms) accepts.add(v);
      Stats h, unused;
      run_documents(compiled, docs, end_token, h, unused);
      for (double v : h.ms) warm.add(v);
      if (r == repeat - 1) {
        const auto stats = compiled->cache_stats();
        fmt::print("{}: {} documents, {} tokens; cache {} masks, {:.1f} MB\n", w.name, docs.size(),
                   tokens, stats.entries, double(stats.bytes) / 1e6);
      }
    }
    fmt::print("  cold  {}\n  warm  {}\n  accept {}\n", cold.line(), warm.line(), accepts.line());
    for (double v : cold.ms) all_cold.add(v);
    for (double v : warm.ms) all_warm.add(v);
    for (double v : accepts.ms) all_accept.add(v);
  }
  fmt::print("\nall schemas, mask per token:\n  cold  {}\n  warm  {}\n  accept {}\n",
             all_cold.line(), all_warm.line(), all_accept.line());

  // What the server adds per token: the mask, then -inf on the disallowed logits (Qwen3-0.6B's
  // output layer is 151,936 wide), then accept().
  std::vector<float> logits(151936, 0.5f);
  TokenMask mask;
  mask.resize(vocab->size());
  for (int32_t id = 0; id < vocab->size(); id += 3) mask.set(id);
  const int reps = 2000;
  start = Clock::now();
  for (int i = 0; i < reps; ++i) mask.apply_to_logits(logits);
  const double apply_ms = ms_since(start) / reps;
  auto mean = [](const Stats& s) {
    double sum = 0;
    for (double v : s.ms) sum += v;
    return s.ms.empty() ? 0.0 : sum / double(s.ms.size());
  };
  const double step_ms = 70.0;
  fmt::print("\nmask -> logits over 151,936 logits: {:.3f} ms\n", apply_ms);
  fmt::print(
      "per token, mask + logits + accept, against a {:.0f} ms Qwen3-0.6B decode step "
      "(2 threads):\n  cold  {:.3f} ms = +{:.2f}%\n  warm  {:.3f} ms = +{:.2f}%\n",
      step_ms, mean(all_cold) + apply_ms + mean(all_accept),
      100 * (mean(all_cold) + apply_ms + mean(all_accept)) / step_ms,
      mean(all_warm) + apply_ms + mean(all_accept),
      100 * (mean(all_warm) + apply_ms + mean(all_accept)) / step_ms);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "grammar_bench: %s\n", e.what());
  return 1;
}
