// Schemas the compiler refuses: each unsupported construct is named with its JSON pointer, and
// contradictions say what contradicts what.
#include <gtest/gtest.h>

#include "constrain/grammar.h"
#include "support/test_support.h"
#include "util/error.h"

namespace bitdelta::constrain {
namespace {

using bitdelta::testing::error_message;

std::string compile_error(const std::string& schema) {
  return error_message(
      [&] { Grammar::from_json_schema_text(schema, "response_format.json_schema"); });
}

void expect_error(const std::string& schema, std::initializer_list<std::string> parts) {
  const std::string message = compile_error(schema);
  ASSERT_FALSE(message.empty()) << "compiled fine: " << schema;
  EXPECT_TRUE(message.starts_with("response_format.json_schema: ")) << message;
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos)
        << "expected \"" << part << "\" in: " << message;
  }
}

TEST(SchemaErrors, UnsupportedKeywordsAreNamedWithTheirPlace) {
  expect_error(
      R"({"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]+$"}}})",
      {"'pattern' at /properties/zip is not supported (supported: type, enum"});
  const struct {
    const char* keyword;
    const char* schema;
    const char* where;
  } cases[] = {
      {"format", R"({"type": "string", "format": "date-time"})", "the schema root"},
      {"patternProperties", R"({"type": "object", "patternProperties": {"^x": {}}})",
       "the schema root"},
      {"not", R"({"properties": {"a": {"not": {"type": "null"}}}})", "/properties/a"},
      {"if", R"({"if": {"type": "string"}, "then": {"maxLength": 2}})", "the schema root"},
      {"dependentRequired", R"({"type": "object", "dependentRequired": {"a": ["b"]}})",
       "the schema root"},
      {"uniqueItems", R"({"type": "array", "items": {"uniqueItems": true}})", "/items"},
      {"multipleOf", R"({"type": "integer", "multipleOf": 5})", "the schema root"},
      {"propertyNames", R"({"type": "object", "propertyNames": {"maxLength": 3}})",
       "the schema root"},
      {"minProperties", R"({"type": "object", "minProperties": 1})", "the schema root"},
      {"contains", R"({"type": "array", "contains": {"type": "integer"}})", "the schema root"},
      {"additionalItems", R"({"type": "array", "additionalItems": false})", "the schema root"},
      {"unevaluatedProperties", R"({"$defs": {"x": {"unevaluatedProperties": false}},
        "$ref": "#/$defs/x"})",
       "/$defs/x"},
      {"nullable", R"({"type": "string", "nullable": true})", "the schema root"},
      {"x-vendor", R"({"prefixItems": [{"x-vendor": 1}]})", "/prefixItems/0"},
  };
  for (const auto& c : cases) {
    expect_error(c.schema,
                 {std::string("'") + c.keyword + "' at " + c.where + " is not supported"});
  }
  // Property names with '/' and '~' are escaped in the pointer (RFC 6901).
  expect_error(R"({"properties": {"a/b~c": {"format": "email"}}})",
               {"'format' at /properties/a~1b~0c"});
}

TEST(SchemaErrors, References) {
  expect_error(R"({"$ref": "https://example.com/schema.json"})",
               {"external $ref 'https://example.com/schema.json'", "not supported"});
  expect_error(R"({"$ref": "other.json#/$defs/a"})", {"external $ref"});
  expect_error(R"({"$ref": "#/$defs/missing", "$defs": {}})",
               {"'#/$defs/missing'", "points to nothing"});
  expect_error(R"({"$ref": "#node"})", {"anchor"});
  expect_error(R"({"$ref": "#/$defs/a", "type": "object", "$defs": {"a": {}}})",
               {"'type' beside '$ref'", "move 'type' into the referenced schema"});
  // Recursion with no way out has no finite document.
  expect_error(R"({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}},
                  "required": ["next"]}}, "$ref": "#/$defs/n"})",
               {"no finite document"});
  expect_error(R"({"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"})",
               {"no finite document"});
  EXPECT_EQ(compile_error(R"({"$defs": {"n": {"anyOf": [{"$ref": "#/$defs/n"}, {"type": "null"}]}},
                             "$ref": "#/$defs/n"})"),
            "");
  EXPECT_EQ(
      compile_error(R"({"$ref": "#/definitions/a~1b", "definitions": {"a/b": {"type": "null"}}})"),
      "");
}

TEST(SchemaErrors, Combinators) {
  expect_error(R"({"allOf": [{"type": "object"}, {"required": ["a"]}]})",
               {"'allOf' with 2 schemas", "only one"});
  expect_error(R"({"anyOf": [{"type": "string"}], "maxLength": 3})",
               {"'maxLength' beside 'anyOf'", "each alternative"});
  expect_error(R"({"anyOf": []})", {"'anyOf' must be a non-empty array"});
  expect_error(R"({"anyOf": [{"type": "string"}], "oneOf": [{"type": "null"}]})",
               {"'anyOf' together with 'oneOf'"});
  EXPECT_EQ(compile_error(R"({"anyOf": [{"type": "string"}], "description": "d", "title": "t"})"),
            "");
}

TEST(SchemaErrors, Contradictions) {
  expect_error(R"({"type": "integer", "minimum": 10, "maximum": 3})",
               {"no integer at the schema root satisfies minimum 10, maximum 3"});
  expect_error(R"({"type": "number", "exclusiveMinimum": 1, "exclusiveMaximum": 1})",
               {"no number at the schema root satisfies exclusiveMinimum 1, exclusiveMaximum 1"});
  expect_error(R"({"type": "integer", "exclusiveMinimum": 1.2, "exclusiveMaximum": 1.9})",
               {"no integer at the schema root satisfies"});
  expect_error(R"({"type": "number", "minimum": 1e20})", {"|x| < 1e15"});
  expect_error(R"({"type": "string", "minLength": 5, "maxLength": 2})",
               {"minLength 5 > maxLength 2"});
  expect_error(R"({"type": "array", "minItems": 3, "maxItems": 1})", {"minItems 3 > maxItems 1"});
  expect_error(R"({"type": "array", "prefixItems": [{}], "items": false, "minItems": 2})",
               {"minItems 2 needs more items"});
  expect_error(R"({"type": "object", "properties": {"a": {}}, "required": ["a", "b"]})",
               {"'required' at the schema root names 'b'", "additionalProperties is false"});
  expect_error(R"({"enum": []})", {"'enum' must be a non-empty array", "(at /enum)"});
  expect_error(R"({"type": "string", "enum": [1, 2]})", {"none of the 'enum' values"});
  expect_error(R"({"enum": ["a"], "const": "b"})", {"'const' is not one of the 'enum' values"});
  expect_error(R"({"properties": {"a": false}, "required": ["a"]})",
               {"schema false admits no value", "(at /properties/a)"});
}

TEST(SchemaErrors, MalformedSchemas) {
  expect_error(R"({"type": "text"})", {"unknown type 'text'", "(at /type)"});
  expect_error(R"({"type": []})", {"'type' must be"});
  expect_error(R"({"minLength": -1})", {"'minLength' must be a non-negative integer"});
  expect_error(R"({"maxItems": 2.5})", {"'maxItems' must be a non-negative integer"});
  expect_error(R"({"type": "number", "exclusiveMinimum": true, "minimum": 0})",
               {"draft 4", "give the bound itself as a number"});
  expect_error(R"({"type": "array", "items": [{"type": "string"}]})", {"use 'prefixItems'"});
  expect_error(R"({"properties": {"a": 3}})", {"must be an object or a boolean", "/properties/a"});
  expect_error(R"({"properties": [1]})", {"'properties' must be an object"});
  expect_error(R"({"required": "a"})", {"'required' must be an array"});
  expect_error("{\"type\": ", {"not valid JSON"});
  expect_error("false", {"admits no value"});
}

TEST(SchemaErrors, SequencesNameTheirPart) {
  const std::string message = error_message([] {
    Grammar::one_of({{GrammarPart::literal("<tool_call>\n"),
                      GrammarPart::json_schema(nlohmann::ordered_json::parse(
                                                   R"({"type": "object", "properties": {
                                                       "q": {"type": "string", "format": "uri"}}})"),
                                               "tools[1].function.parameters")}});
  });
  EXPECT_NE(message.find("tools[1].function.parameters: 'format' at /properties/q is not "
                         "supported"),
            std::string::npos)
      << message;
  EXPECT_NE(error_message([] {
              Grammar::sequence({GrammarPart::literal("")});
            }).find("at least one non-empty part"),
            std::string::npos);
  EXPECT_NE(error_message([] { Grammar::one_of({}); }).find("at least one alternative"),
            std::string::npos);
}

TEST(SchemaErrors, SupportedShapesCompile) {
  for (const char* schema : {
           R"({})",
           R"(true)",
           R"({"type": "object"})",
           R"({"type": ["string", "integer", "number", "boolean", "null", "array", "object"]})",
           R"({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x",
               "title": "T", "description": "D", "default": 1, "examples": [1], "strict": true,
               "type": "integer"})",
           R"({"oneOf": [{"const": 1}, {"const": "1"}]})",
           R"({"allOf": [{"$ref": "#/$defs/a"}], "$defs": {"a": {"type": "null"}}})",
       }) {
    EXPECT_EQ(compile_error(schema), "") << schema;
  }
}

}  // namespace
}  // namespace bitdelta::constrain
