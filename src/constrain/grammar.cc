#include "constrain/grammar.h"

#include "constrain/grammar_builder.h"
#include "constrain/schema_compiler.h"
#include "util/error.h"

namespace bitdelta::constrain {

using detail::GraphBuilder;

GrammarPart GrammarPart::literal(std::string text) {
  GrammarPart p;
  p.kind = Kind::kText;
  p.text = std::move(text);
  return p;
}

GrammarPart GrammarPart::json_schema(nlohmann::ordered_json schema, std::string where) {
  GrammarPart p;
  p.kind = Kind::kJsonSchema;
  p.schema = std::move(schema);
  p.where = std::move(where);
  return p;
}

GrammarPart GrammarPart::any_json_object() {
  GrammarPart p;
  p.kind = Kind::kAnyJsonObject;
  return p;
}

GrammarPart GrammarPart::any_json_value() {
  GrammarPart p;
  p.kind = Kind::kAnyJsonValue;
  return p;
}

namespace {

uint32_t add_sequence(GraphBuilder& b, const std::vector<GrammarPart>& parts,
                      const std::string& where) {
  std::vector<uint32_t> nodes;
  for (const GrammarPart& part : parts) {
    switch (part.kind) {
      case GrammarPart::Kind::kText:
        if (!part.text.empty()) nodes.push_back(b.literal({part.text}, true));
        break;
      case GrammarPart::Kind::kJsonSchema:
        nodes.push_back(detail::compile_json_schema(b, part.schema, part.where));
        break;
      case GrammarPart::Kind::kAnyJsonObject:
        nodes.push_back(b.any_object());
        break;
      case GrammarPart::Kind::kAnyJsonValue:
        nodes.push_back(b.any_value());
        break;
    }
  }
  if (nodes.empty()) fail("{}: a grammar sequence needs at least one non-empty part", where);
  return b.sequence(std::move(nodes));
}

}  // namespace

Grammar::Grammar(std::unique_ptr<detail::GrammarGraph> graph) : graph_(std::move(graph)) {}
Grammar::~Grammar() = default;

size_t Grammar::num_nodes() const { return graph_->nodes.size(); }

std::shared_ptr<const Grammar> Grammar::from_json_schema(const nlohmann::ordered_json& schema,
                                                         std::string_view where) {
  GraphBuilder b;
  const uint32_t top = detail::compile_json_schema(b, schema, where);
  return std::shared_ptr<const Grammar>(new Grammar(b.finish(top, where)));
}

std::shared_ptr<const Grammar> Grammar::from_json_schema(const nlohmann::json& schema,
                                                         std::string_view where) {
  return from_json_schema(nlohmann::ordered_json::parse(schema.dump()), where);
}

std::shared_ptr<const Grammar> Grammar::from_json_schema_text(std::string_view schema_text,
                                                              std::string_view where) {
  nlohmann::ordered_json schema;
  try {
    schema = nlohmann::ordered_json::parse(schema_text);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: the schema is not valid JSON ({})", where, e.what());
  }
  return from_json_schema(schema, where);
}

std::shared_ptr<const Grammar> Grammar::any_json_object() {
  GraphBuilder b;
  const uint32_t top = b.any_object();
  return std::shared_ptr<const Grammar>(new Grammar(b.finish(top, "json_object")));
}

std::shared_ptr<const Grammar> Grammar::any_json_value() {
  GraphBuilder b;
  const uint32_t top = b.any_value();
  return std::shared_ptr<const Grammar>(new Grammar(b.finish(top, "json")));
}

std::shared_ptr<const Grammar> Grammar::sequence(const std::vector<GrammarPart>& parts) {
  GraphBuilder b;
  const uint32_t top = add_sequence(b, parts, "grammar");
  return std::shared_ptr<const Grammar>(new Grammar(b.finish(top, "grammar")));
}

std::shared_ptr<const Grammar> Grammar::one_of(
    const std::vector<std::vector<GrammarPart>>& alternatives) {
  if (alternatives.empty()) fail("grammar: a choice needs at least one alternative");
  GraphBuilder b;
  std::vector<uint32_t> nodes;
  for (size_t i = 0; i < alternatives.size(); ++i) {
    nodes.push_back(add_sequence(b, alternatives[i], fmt::format("grammar alternative {}", i)));
  }
  const uint32_t top = nodes.size() == 1 ? nodes[0] : b.choice(std::move(nodes));
  return std::shared_ptr<const Grammar>(new Grammar(b.finish(top, "grammar")));
}

}  // namespace bitdelta::constrain
