// What a constrained model output must look like: compiled from a JSON Schema (OpenAI
// response_format json_schema, strict), "any JSON object" (response_format json_object), or a
// sequence of exact text and JSON values (a forced tool call in the model's own format, e.g.
// Qwen3's "<tool_call>\n{...}\n</tool_call>"), or a choice between such sequences (one per tool).
//
// A Grammar does not know any tokenizer; CompiledGrammar (matcher.h) binds it to a vocabulary.
// The supported JSON Schema subset, the whitespace policy and the error messages are described in
// docs/structured-output.md. Grammars are immutable and shared (std::shared_ptr<const Grammar>).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace bitdelta::constrain {

namespace detail {
struct GrammarGraph;
}

// One part of a grammar sequence.
struct GrammarPart {
  enum class Kind { kText, kJsonSchema, kAnyJsonObject, kAnyJsonValue };
  Kind kind = Kind::kText;
  std::string text;               // kText: the exact bytes (non-empty)
  nlohmann::ordered_json schema;  // kJsonSchema
  std::string where;              // kJsonSchema: names the schema in error messages

  // Exact text. A special or added token of the vocabulary (e.g. Qwen3's <tool_call>) whose text
  // is a stretch of it may stand for that stretch, as may ordinary tokens spelling it out.
  static GrammarPart literal(std::string text);
  // One JSON value valid against `schema`; `where` starts error messages (e.g.
  // "tools[0].function.parameters").
  static GrammarPart json_schema(nlohmann::ordered_json schema, std::string where = "json_schema");
  static GrammarPart any_json_object();
  static GrammarPart any_json_value();
};

class Grammar {
 public:
  // One JSON value valid against `schema`. Object properties are generated in the schema's
  // `properties` order, so pass an ordered_json (the nlohmann::json overload sees the keys in
  // sorted order). `where` starts error messages, e.g. "response_format.json_schema".
  // Throws Error for an unsupported construct, a contradiction or a malformed schema.
  static std::shared_ptr<const Grammar> from_json_schema(const nlohmann::ordered_json& schema,
                                                         std::string_view where = "json_schema");
  static std::shared_ptr<const Grammar> from_json_schema(const nlohmann::json& schema,
                                                         std::string_view where = "json_schema");
  // Parses `schema_text` (keeps the key order). Throws Error for text that is not JSON.
  static std::shared_ptr<const Grammar> from_json_schema_text(
      std::string_view schema_text, std::string_view where = "json_schema");
  // Any JSON object (response_format json_object) / any JSON value.
  static std::shared_ptr<const Grammar> any_json_object();
  static std::shared_ptr<const Grammar> any_json_value();
  // The parts one after another (no whitespace between them but what the text parts hold).
  static std::shared_ptr<const Grammar> sequence(const std::vector<GrammarPart>& parts);
  // Any one of several sequences, e.g. one per tool for tool_choice "required". A schema error
  // in any alternative is an error of the whole.
  static std::shared_ptr<const Grammar> one_of(
      const std::vector<std::vector<GrammarPart>>& alternatives);

  ~Grammar();
  Grammar(const Grammar&) = delete;
  Grammar& operator=(const Grammar&) = delete;

  size_t num_nodes() const;
  const detail::GrammarGraph& graph() const { return *graph_; }

 private:
  explicit Grammar(std::unique_ptr<detail::GrammarGraph> graph);
  std::unique_ptr<detail::GrammarGraph> graph_;
};

}  // namespace bitdelta::constrain
