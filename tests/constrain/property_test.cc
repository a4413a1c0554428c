// Property test: for many schemas, random walks over the real Qwen3 vocabulary (a random allowed
// token at each step, from a seeded RNG, leaning toward closing after a while so documents end)
// must never reach a state with no allowed token, must parse as JSON, and must be valid against
// the schema for an independent validator (Python's jsonschema, Draft 2020-12, run by
// validate_json.py). Along the way the mask is cross-checked against accept() on sampled tokens.
#include <gtest/gtest.h>

#include <fstream>

#include "constrain_test_util.h"

namespace bitdelta::constrain::testing {
namespace {

using bitdelta::testing::ScratchDir;
using Json = nlohmann::ordered_json;

const char* const kSchemas[] = {
    // 0 a person
    R"({"type": "object", "properties": {"name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150}, "email": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age"]})",
    // 1 nested objects
    R"({"type": "object", "properties": {"user": {"type": "object", "properties": {
        "id": {"type": "integer"}, "profile": {"type": "object", "properties": {
          "first": {"type": "string"}, "last": {"type": "string"}, "nick": {"type": "string"}},
          "required": ["first", "last"]}}, "required": ["id", "profile"]},
        "meta": {"type": "object", "properties": {"created": {"type": "string"}}}},
        "required": ["user"]})",
    // 2 an array of objects
    R"({"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "integer", "minimum": 1}, "label": {"type": "string"}},
        "required": ["id", "label"]}, "minItems": 1, "maxItems": 4})",
    // 3 string enum
    R"({"enum": ["red", "green", "blue", "dark \"purple\"", "ünïcødé", "a\nb"]})",
    // 4 number enum
    R"({"enum": [0, -1, 2.5, 1000.0, 12, 123, -0.125]})",
    // 5 mixed enum
    R"({"enum": ["a", 1, null, true, [1, 2], {"k": "v"}]})",
    // 6 integer, negative inclusive bounds
    R"({"type": "integer", "minimum": -1000, "maximum": -7})",
    // 7 integer, fractional exclusive bounds
    R"({"type": "integer", "exclusiveMinimum": -3.5, "exclusiveMaximum": 4.2})",
    // 8 number, fractional inclusive bounds
    R"({"type": "number", "minimum": -2.75, "maximum": 3.125})",
    // 9 number, a narrow exclusive range
    R"({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.001})",
    // 10 number, one-sided
    R"({"type": "number", "minimum": 1000000})",
    // 11 number, negative exclusive maximum
    R"({"type": "number", "exclusiveMaximum": -100.5})",
    // 12 optional fields around one required
    R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
        "c": {"type": "boolean"}, "d": {"type": "number"}}, "required": ["c"]})",
    // 13 additionalProperties false, all optional
    R"({"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "additionalProperties": false})",
    // 14 additionalProperties as a schema
    R"({"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
        "additionalProperties": {"type": "number"}, "required": ["id"]})",
    // 15 additionalProperties true
    R"({"type": "object", "additionalProperties": true})",
    // 16 minItems / maxItems
    R"({"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 5})",
    // 17 tuple
    R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"},
        {"type": "boolean"}], "items": false, "minItems": 2})",
    // 18 string lengths
    R"({"type": "object", "properties": {"code": {"type": "string", "minLength": 3,
        "maxLength": 3}, "note": {"type": "string", "maxLength": 10},
        "long": {"type": "string", "minLength": 20}}, "required": ["code", "note", "long"]})",
    // 19 anyOf
    R"({"anyOf": [{"type": "string", "maxLength": 5}, {"type": "integer", "minimum": 10},
        {"type": "object", "properties": {"x": {"type": "null"}}, "required": ["x"]}]})",
    // 20 oneOf with disjoint alternatives
    R"({"oneOf": [{"type": "string"}, {"type": "number"}]})",
    // 21 recursive tree
    R"({"$defs": {"node": {"type": "object", "properties": {"label": {"type": "string"},
        "weight": {"type": "number"}, "children": {"type": "array",
        "items": {"$ref": "#/$defs/node"}, "maxItems": 3}}, "required": ["label"]}},
        "$ref": "#/$defs/node"})",
    // 22 recursive list through definitions, the recursion required but nullable
    R"({"definitions": {"list": {"type": "object", "properties": {"head": {"type": "integer"},
        "tail": {"anyOf": [{"$ref": "#/definitions/list"}, {"type": "null"}]}},
        "required": ["head", "tail"]}}, "$ref": "#/definitions/list"})",
    // 23 const
    R"({"type": "object", "properties": {"kind": {"const": "circle"},
        "r": {"type": "number", "exclusiveMinimum": 0}}, "required": ["kind", "r"]})",
    // 24 nullable type arrays
    R"({"type": "object", "properties": {"a": {"type": ["string", "null"]},
        "b": {"type": ["integer", "null"], "minimum": 0},
        "c": {"type": ["array", "null"], "items": {"type": "boolean"}}},
        "required": ["a", "b", "c"]})",
    // 25 allOf with one $ref (pydantic's shape)
    R"({"$defs": {"Address": {"type": "object", "properties": {"street": {"type": "string"},
        "zip": {"type": "string", "minLength": 5, "maxLength": 5}}, "required": ["street", "zip"],
        "title": "Address"}}, "type": "object", "properties": {"home": {"allOf": [
        {"$ref": "#/$defs/Address"}], "description": "where"}}, "required": ["home"]})",
    // 26 any value
    R"({})",
    // 27 boolean and null
    R"({"type": "object", "properties": {"flag": {"type": "boolean"},
        "nothing": {"type": "null"}}, "required": ["flag", "nothing"]})",
    // 28 nested arrays
    R"({"type": "array", "items": {"type": "array", "items": {"type": "array",
        "items": {"type": "integer"}, "maxItems": 3}, "maxItems": 3}, "maxItems": 3})",
    // 29 a string map
    R"({"type": "object", "additionalProperties": {"type": "string", "maxLength": 12}})",
    // 30 two types with their own keywords
    R"({"type": ["integer", "string"], "minimum": 5, "maxLength": 3})",
    // 31 tool arguments
    R"({"type": "object", "properties": {"city": {"type": "string", "minLength": 1},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}}, "required": ["city", "unit"]})",
    // 32 keys that need escapes
    R"({"type": "object", "properties": {"quote\"key": {"type": "integer"},
        "slash/key": {"type": "string"}, "ünï": {"type": "boolean"}},
        "required": ["quote\"key", "slash/key", "ünï"]})",
    // 33 additional keys must differ from declared ones
    R"({"type": "object", "properties": {"name": {"type": "string"},
        "names": {"type": "array", "items": {"type": "string"}}},
        "additionalProperties": {"type": "integer"}})",
    // 34 type inferred from keywords
    R"({"properties": {"a": {"minimum": 0, "maximum": 1}}, "required": ["a"]})",
    // 35 a tiny range around zero
    R"({"type": "number", "minimum": -0.0001, "maximum": 0.0001})",
    // 36 large integer bounds
    R"({"type": "integer", "minimum": -99999999999, "maximum": 99999999999})",
    // 37 array of enums with bounds on count
    R"({"type": "array", "items": {"enum": ["x", "y", 3]}, "minItems": 3, "maxItems": 3})",
    // 38 long bounded strings (positions far from maxLength share one cache key)
    R"({"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 150},
        "minItems": 1, "maxItems": 3})",
};

// For leaning toward the end: the token of each single byte, and how much each byte helps a
// document close (a quote, a closing bracket, then digits and commas; openers and whitespace are
// avoided). Only single-byte tokens are used then, so a token's bytes are what the score says.
struct Closer {
  std::vector<int32_t> token;  // per byte, -1 when the vocabulary has none
  int score(uint8_t c) const {
    if (c == '"') return 5;  // inside a string, '}' is just text
    if (c == '}' || c == ']') return 4;
    if (c >= '0' && c <= '9') return 2;
    if (c == ',') return 1;
    if (c == '{' || c == '[') return -5;
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') return -3;
    return 0;
  }
};

Closer make_closer(const TokenVocab& vocab) {
  Closer c;
  c.token.assign(256, -1);
  for (int32_t id = 0; id < vocab.size(); ++id) {
    if (!vocab.is_special(id) && vocab.bytes(id).size() == 1) {
      c.token[uint8_t(vocab.bytes(id)[0])] = id;
    }
  }
  return c;
}

struct Walk {
  std::string text;
  bool finished = false;
  bool dead_end = false;
  int mismatches = 0;
};

int32_t random_allowed(const TokenMask& mask, std::mt19937_64& rng) {
  std::uniform_int_distribution<int32_t> any(0, mask.size() - 1);
  for (int i = 0; i < 64; ++i) {
    const int32_t id = any(rng);
    if (mask.test(id)) return id;
  }
  const std::vector<int32_t> ids = mask.ids();
  return ids[std::uniform_int_distribution<size_t>(0, ids.size() - 1)(rng)];
}

bool all_whitespace(const std::string& bytes) {
  return bytes.find_first_not_of(" \t\r\n") == std::string::npos;
}

// A random allowed token, mostly not whitespace alone: Qwen3 has thousands of whitespace-run
// tokens, which would otherwise fill most structural positions.
int32_t random_token(const TokenMask& mask, const TokenVocab& vocab, std::mt19937_64& rng) {
  int32_t id = random_allowed(mask, rng);
  for (int i = 0; i < 8 && all_whitespace(vocab.bytes(id)); ++i) {
    if (std::uniform_int_distribution<int>(0, 3)(rng) == 0) break;
    id = random_allowed(mask, rng);
  }
  return id;
}

Walk random_walk(const std::shared_ptr<const CompiledGrammar>& c, std::mt19937_64& rng,
                 const Closer& closer, int max_tokens = 1500) {
  Walk w;
  GrammarMatcher m(c);
  TokenMask mask;
  const int loose = std::uniform_int_distribution<int>(2, 60)(rng);
  std::uniform_int_distribution<int32_t> any(0, c->vocab().size() - 1);
  for (int step = 0; step < max_tokens; ++step) {
    m.fill_mask(mask);
    if (mask.count() == 0) {
      w.dead_end = true;
      return w;
    }
    for (int k = 0; k < 6; ++k) {  // the mask must agree with accept()
      const int32_t probe = k == 0 ? kQwenImEnd : any(rng);
      GrammarMatcher copy = m;
      if (copy.accept(probe) != mask.test(probe)) ++w.mismatches;
    }
    int32_t pick;
    if (mask.test(kQwenImEnd) && (step >= loose || mask.count() == 1 ||
                                  std::uniform_int_distribution<int>(0, 3)(rng) == 0)) {
      pick = kQwenImEnd;
    } else if (step < loose) {
      pick = random_token(mask, c->vocab(), rng);
    } else {
      // The allowed single byte that closes best (ties at random).
      int best = INT32_MIN;
      std::vector<int32_t> top;
      for (int b = 0; b < 256; ++b) {
        const int32_t id = closer.token[size_t(b)];
        if (id < 0 || !mask.test(id)) continue;
        const int s = closer.score(uint8_t(b));
        if (s > best) top.clear();
        if (s >= best) {
          best = s;
          top.push_back(id);
        }
      }
      pick = top.empty() ? random_allowed(mask, rng)
                         : top[std::uniform_int_distribution<size_t>(0, top.size() - 1)(rng)];
    }
    if (!m.accept(pick)) {
      ++w.mismatches;
      return w;
    }
    if (m.ended()) {
      w.finished = true;
      return w;
    }
    w.text += c->vocab().bytes(pick);
  }
  return w;
}

// Runs validate_json.py over the documents; returns its output, "" when all are valid.
std::string validate(const std::vector<Json>& schemas,
                     const std::vector<std::pair<size_t, std::string>>& docs) {
  ScratchDir dir;
  {
    std::ofstream s(dir / "schemas.json");
    s << Json(schemas).dump();
    std::ofstream d(dir / "docs.jsonl");
    for (const auto& [index, text] : docs)
      d << Json{{"schema", index}, {"doc", text}}.dump() << "\n";
  }
  const auto r = bitdelta::testing::run_command(
      "/usr/bin/python3 " +
      bitdelta::testing::source_path("tests/constrain/validate_json.py").string() + " " +
      (dir / "schemas.json").string() + " " + (dir / "docs.jsonl").string());
  if (r.exit_code == 0) return "";
  return "validate_json.py exit " + std::to_string(r.exit_code) + ":\n" + r.out + r.err;
}

// BITDELTA_PROPERTY_SEED=n runs the walks from another seed (to search further by hand).
uint64_t seed(uint64_t fallback) {
  const char* env = std::getenv("BITDELTA_PROPERTY_SEED");
  return env != nullptr ? std::stoull(env) : fallback;
}

TEST(ConstrainProperty, RandomDocumentsAreValid) {
  const Closer closer = make_closer(*qwen3_vocab());
  std::mt19937_64 rng(seed(20240611));
  std::vector<Json> schemas;
  std::vector<std::pair<size_t, std::string>> docs;
  size_t unfinished = 0;
  constexpr int kDocsPerSchema = 48;
  for (size_t i = 0; i < std::size(kSchemas); ++i) {
    schemas.push_back(Json::parse(kSchemas[i]));
    auto c =
        compile_for_qwen(Grammar::from_json_schema(schemas.back(), "schema " + std::to_string(i)));
    for (int d = 0; d < kDocsPerSchema; ++d) {
      Walk w = random_walk(c, rng, closer);
      EXPECT_FALSE(w.dead_end) << "schema " << i << ": no allowed token after: " << w.text;
      EXPECT_EQ(w.mismatches, 0) << "schema " << i
                                 << ": mask and accept() disagree after: " << w.text;
      if (!w.finished) {
        ++unfinished;
        continue;
      }
      EXPECT_TRUE(nlohmann::json::accept(w.text)) << "schema " << i << ": " << w.text;
      docs.push_back({i, w.text});
    }
  }
  // Nearly every walk ends within its budget; the rest are long, not stuck.
  EXPECT_LT(unfinished, std::size(kSchemas) * kDocsPerSchema / 20);
  EXPECT_GT(docs.size(), std::size(kSchemas) * kDocsPerSchema * 9 / 10);
  EXPECT_EQ(validate(schemas, docs), "");
}

TEST(ConstrainProperty, ValidatorRejectsInvalidDocuments) {
  // The negative control: the independent validator does catch what it should.
  const std::vector<Json> schemas = {Json::parse(kSchemas[0]), Json::parse(kSchemas[8])};
  EXPECT_EQ(validate(schemas, {{0, R"({"name":"x","age":3})"}, {1, "3.125"}}), "");
  EXPECT_NE(validate(schemas, {{0, R"({"name":"x","age":151})"}}), "");
  EXPECT_NE(validate(schemas, {{0, R"({"name":"x"})"}}), "");
  EXPECT_NE(validate(schemas, {{1, "3.1251"}}), "");
  EXPECT_NE(validate(schemas, {{1, "[1,"}}), "");
}

TEST(ConstrainProperty, ToolCallSequences) {
  // Qwen3's forced tool call: "<tool_call>\n" + one of two tools' JSON + "\n</tool_call>".
  const Json weather = Json::parse(R"({"type": "object", "properties": {
      "name": {"const": "get_weather"}, "arguments": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["city"]}}, "required": ["name", "arguments"]})");
  const Json search = Json::parse(R"({"type": "object", "properties": {
      "name": {"const": "search"}, "arguments": {"type": "object", "properties": {
        "query": {"type": "string", "minLength": 1}}, "required": ["query"]}},
      "required": ["name", "arguments"]})");
  auto grammar = Grammar::one_of(
      {{GrammarPart::literal("<tool_call>\n"), GrammarPart::json_schema(weather, "tools[0]"),
        GrammarPart::literal("\n</tool_call>")},
       {GrammarPart::literal("<tool_call>\n"), GrammarPart::json_schema(search, "tools[1]"),
        GrammarPart::literal("\n</tool_call>")}});
  auto c = compile_for_qwen(grammar);
  const Closer closer = make_closer(*qwen3_vocab());
  std::mt19937_64 rng(seed(7));
  std::vector<std::pair<size_t, std::string>> docs;
  for (int d = 0; d < 40; ++d) {
    Walk w = random_walk(c, rng, closer);
    ASSERT_FALSE(w.dead_end) << w.text;
    ASSERT_EQ(w.mismatches, 0) << w.text;
    if (!w.finished) continue;
    const std::string head = "<tool_call>\n", tail = "\n</tool_call>";
    ASSERT_TRUE(w.text.starts_with(head) && w.text.ends_with(tail)) << w.text;
    docs.push_back({0, w.text.substr(head.size(), w.text.size() - head.size() - tail.size())});
  }
  EXPECT_GT(docs.size(), 35u);
  EXPECT_EQ(validate({Json{{"anyOf", Json::array({weather, search})}}}, docs), "");
}

TEST(ConstrainProperty, AnyJsonObject) {
  auto c = compile_for_qwen(Grammar::any_json_object());
  const Closer closer = make_closer(*qwen3_vocab());
  std::mt19937_64 rng(seed(11));
  std::vector<std::pair<size_t, std::string>> docs;
  for (int d = 0; d < 40; ++d) {
    Walk w = random_walk(c, rng, closer);
    ASSERT_FALSE(w.dead_end) << w.text;
    ASSERT_EQ(w.mismatches, 0) << w.text;
    if (w.finished) docs.push_back({0, w.text});
  }
  EXPECT_GT(docs.size(), 35u);
  EXPECT_EQ(validate({Json{{"type", "object"}}}, docs), "");
}

}  // namespace
}  // namespace bitdelta::constrain::testing
