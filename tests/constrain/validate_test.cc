// validation_error (constrain/validate.h): each keyword with valid and invalid values, $ref
// recursion, schema errors worded as the compiler words them, agreement with the grammar on
// documents it can write, and verdicts cross-checked with Python's jsonschema (Draft 2020-12).
#include "constrain/validate.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <iostream>
#include <random>

#include "constrain_test_util.h"
#include "util/error.h"

namespace bitdelta::constrain::testing {
namespace {

using bitdelta::testing::error_message;
using Json = nlohmann::json;

std::string problem_of(const std::string& schema, const std::string& value) {
  return validation_error(Json::parse(value), Json::parse(schema));
}

void expect_valid(const std::string& schema, std::initializer_list<const char*> values) {
  for (const char* value : values) {
    EXPECT_EQ(problem_of(schema, value), "") << "schema " << schema << "\nvalue " << value;
  }
}

void expect_invalid(const std::string& schema, const std::string& value,
                    const std::string& message) {
  EXPECT_EQ(problem_of(schema, value), message) << "schema " << schema << "\nvalue " << value;
}

TEST(Validate, Types) {
  expect_valid(R"({"type": "string"})", {R"("")", R"("x")"});
  expect_invalid(R"({"type": "string"})", "5", "(root): expected string, got 5");
  expect_valid(R"({"type": "boolean"})", {"true", "false"});
  expect_invalid(R"({"type": "boolean"})", "0", "(root): expected boolean, got 0");
  expect_valid(R"({"type": "null"})", {"null"});
  expect_invalid(R"({"type": "null"})", "false", "(root): expected null, got false");
  expect_valid(R"({"type": "number"})", {"0", "-1.5", "1e300", "18446744073709551615"});
  expect_invalid(R"({"type": "number"})", R"("1")", R"((root): expected number, got "1")");
  // An integer is a number with no fraction part, however it is written.
  expect_valid(R"({"type": "integer"})", {"0", "-7", "1.0", "2e3", "-0.0"});
  expect_invalid(R"({"type": "integer"})", "1.5", "(root): expected integer, got 1.5");
  expect_invalid(R"({"type": "integer"})", "true", "(root): expected integer, got true");
  expect_valid(R"({"type": "array"})", {"[]", "[1, \"a\", null]"});
  expect_invalid(R"({"type": "array"})", "{}", "(root): expected array, got {}");
  // A list of types, each with its own keywords.
  const char* several = R"({"type": ["integer", "string", "null"], "minimum": 5, "maxLength": 3})";
  expect_valid(several, {"5", "7.0", R"("abc")", "null"});
  expect_invalid(several, "4", "(root): 4 is less than minimum 5");
  expect_invalid(several, R"("abcd")", "(root): 4 characters, more than maxLength 3");
  expect_invalid(several, "5.5", "(root): expected integer or string or null, got 5.5");
  expect_valid(R"({"type": ["number", "integer"]})", {"5.5", "5"});
  // Without 'type', the keywords present decide it, as in the compiler (not Draft 2020-12).
  expect_invalid(R"({"maxLength": 3})", "5", "(root): expected string, got 5");
  expect_invalid(R"({"minimum": 3})", R"("abc")", R"((root): expected number, got "abc")");
  expect_valid(R"({"minimum": 3, "maxLength": 1})", {"4.5", R"("a")"});
  expect_invalid(R"({"required": ["a"], "additionalProperties": true})", "[]",
                 "(root): expected object, got []");
  // No type keyword at all: any value.
  for (const char* schema : {"{}", "true", R"({"description": "anything"})"}) {
    expect_valid(schema, {"null", "1", R"("s")", R"({"a": [1]})", "[{}]"});
  }
  expect_invalid("false", "1", "(root): no value is allowed here (schema false)");
}

TEST(Validate, EnumAndConst) {
  const char* e = R"({"enum": ["red", 1, null, [1, 2], {"a": true}]})";
  expect_valid(e, {R"("red")", "1", "1.0", "null", "[1, 2]", "[1.0, 2]", R"({"a": true})"});
  expect_invalid(e, "true",
                 R"((root): true is not one of the enum values ["red",1,null,[1,2],{"a":true}])");
  expect_invalid(e, R"("Red")",
                 R"((root): "Red" is not one of the enum values ["red",1,null,[1,2],{"a":true}])");
  expect_invalid(e, "[2, 1]",
                 R"((root): [2,1] is not one of the enum values ["red",1,null,[1,2],{"a":true}])");
  expect_invalid(
      e, R"({"a": 1})",
      R"((root): {"a":1} is not one of the enum values ["red",1,null,[1,2],{"a":true}])");
  // Objects compare by member, whatever the key order.
  const char* c = R"({"const": {"x": 1, "y": [true, "z"]}})";
  expect_valid(c, {R"({"y": [true, "z"], "x": 1.0})"});
  expect_invalid(c, R"({"x": 1})",
                 R"((root): {"x":1} is not the const value {"x":1,"y":[true,"z"]})");
  expect_invalid(
      c, R"({"x": 1, "y": [true, "z"], "w": 0})",
      R"((root): {"w":0,"x":1,"y":[true,"z"]} is not the const value {"x":1,"y":[true,"z"]})");
  // The other keywords still apply beside enum.
  const char* filtered = R"({"type": "string", "enum": ["a", "abc", 5], "maxLength": 2})";
  expect_valid(filtered, {R"("a")"});
  expect_invalid(filtered, R"("abc")", "(root): 3 characters, more than maxLength 2");
  expect_invalid(filtered, "5", "(root): expected string, got 5");
  // Large integers compare exactly, not through doubles.
  expect_invalid(R"({"const": 9007199254740993})", "9007199254740992",
                 "(root): 9007199254740992 is not the const value 9007199254740993");
}

TEST(Validate, Objects) {
  const char* person = R"({"type": "object", "properties": {
      "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
      "required": ["name"]})";
  // Key order and whitespace do not matter.
  expect_valid(person, {R"({"name": "Ann"})", R"({"age": 3, "name": "Ann"})",
                        "{\n  \"age\" : 3 ,\n\t\"name\":\"Ann\"\n}"});
  expect_invalid(person, R"({"age": 3})", R"((root): missing required property "name")");
  expect_invalid(person, R"({"name": "Ann", "age": -1})", "/age: -1 is less than minimum 0");
  expect_invalid(person, R"({"name": 1})", "/name: expected string, got 1");
  expect_invalid(person, "[]", "(root): expected object, got []");
  // additionalProperties absent counts as false, as in the grammar compiler.
  expect_invalid(person, R"({"name": "Ann", "nick": "A"})",
                 "/nick: property not allowed: it is not in 'properties' and additionalProperties "
                 "is absent, which counts as false here");
  expect_valid(R"({"type": "object"})", {"{}"});
  expect_invalid(R"({"type": "object"})", R"({"a": 1})",
                 "/a: property not allowed: it is not in 'properties' and additionalProperties is "
                 "absent, which counts as false here");
  expect_invalid(R"({"type": "object", "additionalProperties": false})", R"({"a~b/c": 1})",
                 "/a~0b~1c: property not allowed: it is not in 'properties' and "
                 "additionalProperties is false");
  expect_valid(R"({"type": "object", "additionalProperties": true})", {R"({"a": [1, {}]})"});
  const char* typed = R"({"properties": {"id": {"type": "integer"}}, "required": ["id", "tag"],
      "additionalProperties": {"type": "string", "maxLength": 2}})";
  expect_valid(typed, {R"({"id": 1, "tag": "ab"})", R"({"tag": "", "x": "y", "id": 2})"});
  expect_invalid(typed, R"({"id": 1})", R"((root): missing required property "tag")");
  expect_invalid(typed, R"({"id": 1, "tag": "abc"})", "/tag: 3 characters, more than maxLength 2");
  expect_invalid(typed, R"({"id": "1", "tag": "a"})", "/id: expected integer, got \"1\"");
  // Nested pointers.
  expect_invalid(R"({"type": "object", "properties": {"a": {"type": "object", "properties": {
      "b": {"type": "array", "items": {"type": "integer"}}}}}})",
                 R"({"a": {"b": [1, 2, "3"]}})", R"(/a/b/2: expected integer, got "3")");
}

TEST(Validate, Arrays) {
  const char* bounded = R"({"type": "array", "items": {"type": "string"}, "minItems": 1,
      "maxItems": 3})";
  expect_valid(bounded, {R"(["a"])", R"(["a", "b", "c"])"});
  expect_invalid(bounded, "[]", "(root): 0 items, fewer than minItems 1");
  expect_invalid(bounded, R"(["a", "b", "c", "d"])", "(root): 4 items, more than maxItems 3");
  expect_invalid(bounded, R"(["a", 2])", "/1: expected string, got 2");
  const char* tuple = R"({"type": "array", "prefixItems": [{"type": "string"}, {"type":
      "integer"}], "items": false})";
  expect_valid(tuple, {"[]", R"(["a"])", R"(["a", 1])"});
  expect_invalid(tuple, R"([1])", "/0: expected string, got 1");
  expect_invalid(tuple, R"(["a", 1, null])",
                 "/2: item not allowed: 'prefixItems' has 2 and 'items' is false");
  const char* rest = R"({"prefixItems": [{"const": "sum"}], "items": {"type": "number"}})";
  expect_valid(rest, {R"(["sum"])", R"(["sum", 1, 2.5])"});
  expect_invalid(rest, R"(["sum", 1, "2"])", R"(/2: expected number, got "2")");
  expect_invalid(rest, R"(["add", 1])", R"(/0: "add" is not the const value "sum")");
  // No 'items': anything after the prefix.
  expect_valid(R"({"prefixItems": [{"type": "null"}]})", {R"([null, 1, "x", {}])"});
}

TEST(Validate, StringLengthsCountCodePoints) {
  const char* city = R"({"type": "object", "properties": {"city": {"type": "string",
      "maxLength": 12}}})";
  expect_valid(city, {R"({"city": "Aberystwyth"})", R"({"city": "Ystradgynlai"})"});
  expect_invalid(city, R"({"city": "Llanfairpwllgwy"})",
                 "/city: 15 characters, more than maxLength 12");
  const char* two = R"({"type": "string", "minLength": 2, "maxLength": 2})";
  // "é" is two bytes, "😀" four bytes or an escaped surrogate pair: one character each.
  expect_valid(two, {R"("éé")", R"("😀a")", R"("\ud83d\ude00\u00e9")", R"("\n\"")"});
  expect_invalid(two, R"("😀")", "(root): 1 characters, fewer than minLength 2");
  expect_invalid(two, R"("abc")", "(root): 3 characters, more than maxLength 2");
}

TEST(Validate, NumberBounds) {
  const char* closed = R"({"type": "number", "minimum": -1.5, "maximum": 2})";
  expect_valid(closed, {"-1.5", "2", "2.0", "0", "1.999"});
  expect_invalid(closed, "-1.6", "(root): -1.6 is less than minimum -1.5");
  expect_invalid(closed, "2.0001", "(root): 2.0001 is greater than maximum 2");
  const char* open = R"({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10})";
  expect_valid(open, {"1", "9", "9.0"});
  expect_invalid(open, "0", "(root): 0 is not greater than exclusiveMinimum 0");
  expect_invalid(open, "10", "(root): 10 is not less than exclusiveMaximum 10");
  expect_invalid(open, "5.5", "(root): expected integer, got 5.5");
  // Compared exactly as the JSON reader's values: 0.1 is the bound's double.
  expect_invalid(R"({"type": "number", "exclusiveMaximum": 0.1})", "0.1",
                 "(root): 0.1 is not less than exclusiveMaximum 0.1");
  expect_valid(R"({"type": "number", "exclusiveMaximum": 0.1})", {"0.0999999", "-1e300"});
  expect_invalid(R"({"type": "integer", "maximum": 9007199254740992})", "9007199254740993",
                 "(root): 9007199254740993 is greater than maximum 9007199254740992");
  // Beyond what the grammar writes (15 digits, exponents with bounds): still valid here.
  expect_valid(R"({"type": "number", "minimum": 0})", {"1e20", "123456789012345678", "0.5e-30"});
}

TEST(Validate, Combinators) {
  const char* any = R"({"anyOf": [{"type": "string", "maxLength": 1}, {"type": "integer"}],
      "description": "a letter or a count"})";
  expect_valid(any, {R"("a")", "3"});
  expect_invalid(any, R"("ab")",
                 R"((root): matches no alternative of anyOf (0: (root): 2 characters, more than )"
                 R"(maxLength 1; 1: (root): expected integer, got "ab"))");
  // oneOf is checked as anyOf: a value in both alternatives passes, as the grammar writes it.
  expect_valid(R"({"oneOf": [{"type": "number"}, {"type": "integer"}]})", {"1", "1.5"});
  expect_invalid(R"({"type": "object", "properties": {"v": {"oneOf": [{"type": "null"},
      {"type": "boolean"}]}}})",
                 R"({"v": 0})",
                 "/v: matches no alternative of oneOf (0: /v: expected null, got 0; 1: /v: "
                 "expected boolean, got 0)");
  const char* all = R"({"allOf": [{"type": "integer", "maximum": 3}]})";
  expect_valid(all, {"3"});
  expect_invalid(all, "4", "(root): 4 is greater than maximum 3");
}

TEST(Validate, References) {
  const char* tree = R"({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
      "properties": {"value": {"type": "integer"}, "children": {"type": "array",
      "items": {"$ref": "#/$defs/node"}}}, "required": ["value"]}}})";
  expect_valid(tree, {R"({"value": 1})", R"({"value": 1, "children": [{"value": 2},
      {"value": 3, "children": [{"value": 4, "children": []}]}]})"});
  expect_invalid(tree, R"({"value": 1, "children": [{"value": 2}, {"children": []}]})",
                 R"(/children/1: missing required property "value")");
  expect_invalid(tree, R"({"value": 1, "children": [{"value": 2, "children": [{"value": "x"}]}]})",
                 R"(/children/0/children/0/value: expected integer, got "x")");
  // Deep recursion is fine: there is no nesting limit here.
  std::string deep = R"({"value": 0})";
  for (int i = 0; i < 200; ++i) deep = R"({"value": 0, "children": [)" + deep + "]}";
  expect_valid(tree, {deep.c_str()});
  // A linked list through 'definitions', a nullable reference, and "#" for the root.
  const char* list = R"({"definitions": {"list": {"anyOf": [{"type": "null"}, {"type": "object",
      "properties": {"head": {"type": "integer"}, "tail": {"$ref": "#/definitions/list"}},
      "required": ["head", "tail"]}]}}, "$ref": "#/definitions/list"})";
  expect_valid(list, {"null", R"({"head": 1, "tail": {"head": 2, "tail": null}})"});
  EXPECT_NE(problem_of(list, R"({"head": 1, "tail": {"head": 2}})"), "");
  const char* nested = R"({"type": "array", "items": {"$ref": "#"}, "maxItems": 2})";
  expect_valid(nested, {"[]", "[[], [[], [[]]]]"});
  expect_invalid(nested, "[[], [[], [[], [], []]]]", "/1/1: 3 items, more than maxItems 2");
  // Percent-encoded and escaped pointers.
  expect_valid(R"({"$defs": {"a b/c": {"type": "null"}}, "$ref": "#/$defs/a%20b~1c"})", {"null"});
  // A reference back to itself without going into the value never matches; other alternatives
  // still may.
  const char* loop = R"({"$defs": {"x": {"anyOf": [{"$ref": "#/$defs/x"}, {"type": "string"}]}},
      "$ref": "#/$defs/x"})";
  expect_valid(loop, {R"("s")"});
  expect_invalid(loop, "1",
                 "(root): matches no alternative of anyOf (0: (root): the $ref '#/$defs/x' leads "
                 "back to itself; 1: (root): expected string, got 1)");
}

std::string schema_error(const std::string& schema) {
  return error_message([&] { validation_error(Json(nullptr), Json::parse(schema)); });
}

TEST(Validate, SchemaErrorsAreWordedAsTheCompilerWordsThem) {
  const char* const schemas[] = {
      R"({"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]+$"}}})",
      R"({"type": "string", "format": "date-time"})",
      R"({"properties": {"a/b~c": {"format": "email"}}})",
      R"({"type": "object", "patternProperties": {"^x": {}}})",
      R"({"type": "array", "items": {"uniqueItems": true}})",
      R"({"prefixItems": [{"x-vendor": 1}]})",
      R"({"type": "string", "nullable": true})",
      R"({"$defs": {"x": {"unevaluatedProperties": false}}, "$ref": "#/$defs/x"})",
      R"({"$ref": "https://example.com/schema.json"})",
      R"({"$ref": "#/$defs/missing", "$defs": {}})",
      R"({"$ref": "#node"})",
      R"({"$ref": "#/$defs/a", "type": "object", "$defs": {"a": {}}})",
      R"({"anyOf": [{"type": "string"}], "maxLength": 3})",
      R"({"anyOf": [{"type": "string"}], "oneOf": [{"type": "null"}]})",
      R"({"allOf": [{"type": "string"}, {"maxLength": 3}]})",
      R"({"anyOf": []})",
      R"({"oneOf": {"type": "string"}})",
      R"({"type": "strin"})",
      R"({"type": []})",
      R"({"type": ["string", 1]})",
      R"({"type": "integer", "exclusiveMinimum": true, "minimum": 0})",
      R"({"type": "number", "maximum": "10"})",
      R"({"type": "array", "items": [{"type": "string"}]})",
      R"({"type": "string", "maxLength": -1})",
      R"({"type": "array", "minItems": 1.5})",
      R"({"enum": []})",
      R"({"type": "object", "properties": []})",
      R"({"type": "object", "required": "a"})",
      R"({"properties": {"a": 5}})",
      R"({"$ref": 5})",
  };
  for (const char* schema : schemas) {
    const std::string ours = schema_error(schema);
    const std::string compiler = error_message(
        [&] { Grammar::from_json_schema_text(schema, "response_format.json_schema"); });
    ASSERT_FALSE(ours.empty()) << "no error for " << schema;
    EXPECT_EQ("response_format.json_schema: " + ours, compiler) << schema;
  }
  // Whatever the value: an unsupported keyword is an error even where the value never goes.
  EXPECT_NE(error_message([] {
              validation_error(Json::parse(R"({"a": 1})"),
                               Json::parse(R"({"type": "object", "properties": {"a": {},
                                   "b": {"type": "string", "pattern": "x"}}})"));
            }),
            "");
  // As in the compiler, unreferenced $defs and keywords of types not allowed are not looked at.
  EXPECT_EQ(schema_error(R"({"type": "null", "$defs": {"unused": {"not": {}}}})"), "");
  EXPECT_EQ(schema_error(R"({"type": "string", "minimum": "x"})"), "");
}

// Documents the grammar can write (keys in 'properties' order, compact, short numbers): the
// validator agrees with the grammar on each, including the project's own rules.
TEST(Validate, AgreesWithTheGrammar) {
  const struct {
    const char* schema;
    std::vector<const char*> docs;
  } cases[] = {
      {R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string",
          "maxLength": 2}}, "required": ["a"]})",
       {R"({"a":1})", R"({"a":1,"b":"xy"})", R"({"a":1,"b":"xyz"})", R"({"b":"x"})",
        R"({"a":1,"c":2})", R"({"a":1.5})", "{}", "[]"}},
      {R"({"type": "object"})", {"{}", R"({"a":1})", "null"}},
      {R"({"type": "object", "properties": {"a": {"type": "null"}}, "required": ["z"],
          "additionalProperties": {"type": "boolean"}})",
       {R"({"z":true})", R"({"a":null,"z":false})", R"({"a":null})", R"({"z":1})",
        R"({"z":true,"q":false})"}},
      {R"({"maxLength": 3, "minimum": 2})", {R"("abc")", R"("abcd")", "2", "1", "null", "[]"}},
      {R"({"properties": {"k": {"const": 1}}})", {R"({"k":1})", "{}", R"({"k":2})", "1"}},
      {R"({"oneOf": [{"type": "number", "maximum": 5}, {"type": "integer", "minimum": 3}]})",
       {"4", "2.5", "7", "6.5"}},
      {R"({"type": "array", "prefixItems": [{"enum": ["a", 2]}], "items": false, "minItems": 1})",
       {R"(["a"])", "[2]", "[3]", "[]", R"(["a","a"])"}},
      {R"({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 1}},
          "$ref": "#/$defs/n"})",
       {"[]", "[[[]]]", "[[],[]]", "[[[1]]]"}},
      {R"({"type": ["string", "null"], "minLength": 1})", {R"("x")", R"("")", "null", "0"}},
  };
  for (const auto& c : cases) {
    const auto grammar = compile_for_bytes(schema_grammar(c.schema));
    for (const char* doc : c.docs) {
      const bool grammar_accepts = bytes_accepted(grammar, doc);
      const std::string problem = problem_of(c.schema, doc);
      EXPECT_EQ(problem.empty(), grammar_accepts)
          << "schema " << c.schema << "\ndoc " << doc << "\nvalidator: " << problem;
    }
  }
}

// The cross-check with jsonschema. Every object schema gives additionalProperties and every
// schema with type keywords gives 'type', and no oneOf alternatives overlap, so the project's own
// rules (absent additionalProperties, implied types, oneOf as anyOf) do not come into it.
const char* const kCrossSchemas[] = {
    R"({"type": "object", "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150}, "email": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["name", "age"], "additionalProperties": false})",
    R"({"type": "object", "properties": {"user": {"type": "object", "properties": {
        "id": {"type": "integer"}, "profile": {"type": "object", "properties": {
        "name": {"type": "string"}, "x": {"type": "number"}}, "required": ["name"],
        "additionalProperties": false}}, "required": ["id", "profile"],
        "additionalProperties": false}}, "required": ["user"], "additionalProperties": false})",
    R"({"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "object", "properties": {
        "id": {"type": "integer", "minimum": 1}, "name": {"type": "string"}}, "required": ["id"],
        "additionalProperties": false}})",
    R"({"type": "object", "properties": {"kind": {"enum": ["a", "b", "c"]}, "value": {"const": 2}},
        "required": ["kind", "value"], "additionalProperties": false})",
    R"({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1})",
    R"({"type": "integer", "minimum": -10, "maximum": -2})",
    R"({"type": ["integer", "string", "null"], "minimum": 5, "maxLength": 3})",
    R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"},
        {"type": "boolean"}], "items": false, "minItems": 2})",
    R"({"type": "array", "prefixItems": [{"const": "a"}], "items": {"type": "number",
        "maximum": 10}})",
    R"({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
        "additionalProperties": {"type": "string", "maxLength": 5}})",
    R"({"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"],
        "additionalProperties": true})",
    R"({"anyOf": [{"type": "string", "maxLength": 2}, {"type": "integer", "minimum": 100},
        {"type": "array", "items": {"type": "null"}, "maxItems": 2}]})",
    R"({"oneOf": [{"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "number",
        "minimum": 0}}, "required": ["kind", "x"], "additionalProperties": false},
        {"type": "object", "properties": {"kind": {"const": "b"}, "name": {"type": "string"}},
        "required": ["kind"], "additionalProperties": false}]})",
    R"({"allOf": [{"type": "object", "properties": {"x": {"type": "integer"},
        "y": {"type": ["integer", "null"]}}, "required": ["x"], "additionalProperties": false}]})",
    R"({"$defs": {"node": {"type": "object", "properties": {"value": {"type": "integer"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["value"],
        "additionalProperties": false}}, "$ref": "#/$defs/node"})",
    R"({"definitions": {"list": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
        "name": {"type": "string"}, "a": {"$ref": "#/definitions/list"}}, "required": ["name", "a"],
        "additionalProperties": false}]}}, "$ref": "#/definitions/list"})",
    R"({"enum": [1, "1", null, true, [1, 2], {"a": 1}]})",
    R"({"const": {"a": [1, {"b": null}], "x": "y"}})",
    R"({"type": "string", "minLength": 2, "maxLength": 4})",
    R"({"type": "number", "minimum": -1.5, "maximum": 2.25})",
    R"({"type": "integer", "exclusiveMinimum": 0.5, "exclusiveMaximum": 3.5})",
    R"({"type": "array", "items": {"$ref": "#"}, "maxItems": 2})",
    R"({"type": "object", "properties": {"a": {}, "b": {"type": "integer"},
        "x": {"description": "any"}}, "required": ["b"], "additionalProperties": false})",
};

// Valid starting points for each schema (the mutations below make most of them invalid).
const std::vector<std::vector<const char*>> kCrossSeeds = {
    {R"({"name": "Ann", "age": 30})", R"({"name": "twelve chars", "age": 150, "tags": []})",
     R"({"age": 0, "name": "😀", "email": "a@b", "tags": ["x", "y", "z"]})"},
    {R"({"user": {"id": 1, "profile": {"name": "Ann", "x": 1.5}}})"},
    {R"([{"id": 1}])", R"([{"id": 2, "name": "b"}, {"id": 3}, {"id": 1.0, "name": ""}])"},
    {R"({"kind": "a", "value": 2})", R"({"value": 2.0, "kind": "c"})"},
    {"0.5", "1e-9", "0.999999"},
    {"-10", "-2", "-5.0"},
    {"5", R"("abc")", "null", "100"},
    {R"(["a", 1])", R"(["", -3, true])"},
    {R"(["a"])", R"(["a", 10, -2.5])"},
    {R"({"id": 1})", R"({"id": 1, "name": "ab", "x": "12345"})"},
    {R"({"a": true})", R"({"a": false, "b": [1], "c": {"d": null}})"},
    {R"("ab")", "100", "[null, null]", "[]"},
    {R"({"kind": "a", "x": 0})", R"({"kind": "b", "name": "n"})", R"({"kind": "b"})"},
    {R"({"x": 1})", R"({"x": -1, "y": null})", R"({"y": 2, "x": 0})"},
    {R"({"value": 1})", R"({"value": 1, "tags": [{"value": 2, "tags": []}, {"value": 3}]})"},
    {"null", R"({"name": "x", "a": {"name": "y", "a": null}})"},
    {"1", R"("1")", "null", "true", "[1, 2]", R"({"a": 1})"},
    {R"({"x": "y", "a": [1, {"b": null}]})"},
    {R"("ab")", R"("éé😀")", R"("abcd")"},
    {"-1.5", "2.25", "0"},
    {"1", "3", "2.0"},
    {"[]", "[[], [[]]]"},
    {R"({"b": 1})", R"({"a": [], "b": 2, "x": {"q": 1}})"},
};

// One random change at a random place: replace a value, drop or add a member or item.
void mutate(Json& doc, std::mt19937& rng) {
  static const Json pool = Json::parse(R"([null, true, false, 0, -1, 1, 1.0, 2.5, -0.5, 3, 7,
      100, 150, 151, 1e3, -10, -11, "", "a", "ab", "abc", "1", "héllo wörld", "😀😀😀",
      "twelve chars", "thirteen char", [], [1, 2], [null], ["a"], {}, {"a": 1}, {"value": 1}])");
  static const char* const names[] = {"name", "age", "id", "kind", "value", "a",
                                      "b",    "x",   "y",  "tags", "extra"};
  std::vector<Json::json_pointer> places;
  const std::function<void(const Json&, const Json::json_pointer&)> collect =
      [&](const Json& v, const Json::json_pointer& p) {
        places.push_back(p);
        if (v.is_object()) {
          for (const auto& [key, value] : v.items()) collect(value, p / key);
        } else if (v.is_array()) {
          for (size_t i = 0; i < v.size(); ++i) collect(v[i], p / i);
        }
      };
  collect(doc, Json::json_pointer());
  Json& target = doc[places[rng() % places.size()]];
  const Json& pick = pool[rng() % pool.size()];
  switch (rng() % 3) {
    case 0:
      target = pick;
      break;
    case 1:  // drop a member or an item
      if (target.is_object() && !target.empty()) {
        auto it = target.begin();
        std::advance(it, rng() % target.size());
        target.erase(it);
      } else if (target.is_array() && !target.empty()) {
        target.erase(target.begin() + long(rng() % target.size()));
      } else {
        target = pick;
      }
      break;
    default:  // add a member or an item
      if (target.is_object()) {
        target[names[rng() % std::size(names)]] = pick;
      } else if (target.is_array()) {
        Json item = target.empty() || rng() % 2 ? pick : target[rng() % target.size()];
        target.push_back(std::move(item));
      } else {
        target = pick;
      }
  }
}

// validate_json.py over `docs` (schema index, document); returns its exit code and output.
bitdelta::testing::CommandResult run_jsonschema(const std::vector<Json>& schemas,
                                                const std::vector<std::pair<size_t, Json>>& docs) {
  bitdelta::testing::ScratchDir dir;
  {
    std::ofstream s(dir / "schemas.json");
    s << Json(schemas).dump();
    std::ofstream d(dir / "docs.jsonl");
    for (const auto& [index, doc] : docs)
      d << Json{{"schema", index}, {"doc", doc.dump()}}.dump() << "\n";
  }
  return bitdelta::testing::run_command(
      "/usr/bin/python3 " +
      bitdelta::testing::source_path("tests/constrain/validate_json.py").string() + " " +
      (dir / "schemas.json").string() + " " + (dir / "docs.jsonl").string());
}

TEST(ValidateCrossCheck, VerdictsEqualJsonschema) {
  ASSERT_EQ(std::size(kCrossSchemas), kCrossSeeds.size());
  std::vector<Json> schemas;
  std::vector<std::pair<size_t, Json>> valid, invalid;
  std::mt19937 rng(20240611);
  for (size_t i = 0; i < kCrossSeeds.size(); ++i) {
    schemas.push_back(Json::parse(kCrossSchemas[i]));
    std::vector<Json> docs;
    for (const char* seed : kCrossSeeds[i]) docs.push_back(Json::parse(seed));
    const size_t seeds = docs.size();
    for (int tries = 0; docs.size() < 24 && tries < 1000; ++tries) {
      Json doc = docs[rng() % seeds];
      for (int k = 1 + rng() % 2; k > 0; --k) mutate(doc, rng);
      if (std::find(docs.begin(), docs.end(), doc) == docs.end()) docs.push_back(doc);
    }
    size_t ours_valid = 0;
    for (size_t k = 0; k < docs.size(); ++k) {
      const std::string problem = validation_error(docs[k], schemas[i]);
      if (k < seeds) {
        EXPECT_EQ(problem, "") << "seed " << docs[k].dump() << " of schema " << i;
      }
      (problem.empty() ? valid : invalid).emplace_back(i, docs[k]);
      ours_valid += problem.empty();
    }
    EXPECT_GE(docs.size() - ours_valid, 8u) << "schema " << i;
  }
  // Enough of both verdicts to mean something.
  EXPECT_GE(valid.size(), 100u);
  EXPECT_GE(invalid.size(), 250u);
  const auto all_valid = run_jsonschema(schemas, valid);
  EXPECT_NE(all_valid.out.find(fmt::format("{} documents, 0 invalid", valid.size())),
            std::string::npos);
  EXPECT_EQ(all_valid.exit_code, 0) << "valid here, not for jsonschema:\n"
                                    << all_valid.out << all_valid.err;
  const auto all_invalid = run_jsonschema(schemas, invalid);
  const std::string expected =
      fmt::format("{} documents, {} invalid", invalid.size(), invalid.size());
  if (all_invalid.out.find(expected) == std::string::npos) {
    for (const auto& doc : invalid) {  // name the ones jsonschema accepts
      const auto one = run_jsonschema(schemas, {doc});
      EXPECT_NE(one.exit_code, 0) << "invalid here, valid for jsonschema: schema " << doc.first
                                  << ", " << doc.second.dump()
                                  << "\nours: " << validation_error(doc.second, schemas[doc.first]);
    }
  }
  EXPECT_NE(all_invalid.out.find(expected), std::string::npos)
      << all_invalid.out << all_invalid.err;
  std::cout << schemas.size() << " schemas, " << valid.size() << " valid and " << invalid.size()
            << " invalid documents, the same verdicts as jsonschema\n";
}

}  // namespace
}  // namespace bitdelta::constrain::testing
