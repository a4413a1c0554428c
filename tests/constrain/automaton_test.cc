// The grammar automaton byte by byte (one token per byte), so each case states exactly which
// texts a schema admits: numbers under bounds, strings, objects, arrays, whitespace, enums,
// sequences. At every byte the mask must agree with accept().
#include <gtest/gtest.h>

#include "constrain_test_util.h"

namespace bitdelta::constrain::testing {
namespace {

struct Case {
  const char* text;
  bool valid;
};

void check(const std::string& schema, std::initializer_list<Case> cases) {
  auto c = compile_for_bytes(schema_grammar(schema));
  for (const Case& k : cases) {
    EXPECT_EQ(bytes_accepted(c, k.text), k.valid) << schema << "\n  text: " << k.text;
  }
}

TEST(Automaton, Integers) {
  check(R"({"type": "integer"})", {{"0", true},
                                   {"-0", true},
                                   {"42", true},
                                   {"-17", true},
                                   {"007", false},
                                   {"1.0", false},
                                   {"1e3", false},
                                   {"", false},
                                   {"-", false},
                                   {"123456789012345", true},
                                   {"1234567890123456", false}});
  check(R"({"type": "integer", "minimum": -5, "maximum": 12})", {{"-5", true},
                                                                 {"-6", false},
                                                                 {"12", true},
                                                                 {"13", false},
                                                                 {"0", true},
                                                                 {"-0", true},
                                                                 {"120", false},
                                                                 {"1", true},
                                                                 {"10", true}});
  check(R"({"type": "integer", "exclusiveMinimum": 2.5, "exclusiveMaximum": 7})",
        {{"2", false}, {"3", true}, {"6", true}, {"7", false}});
  check(R"({"type": "integer", "minimum": 100})", {{"99", false}, {"100", true}, {"5000", true}});
}

TEST(Automaton, NumbersWithBounds) {
  check(R"({"type": "number", "minimum": 0.5, "maximum": 2.25})", {{"0.5", true},
                                                                   {"0.49", false},
                                                                   {"2.25", true},
                                                                   {"2.250", true},
                                                                   {"2.2500001", false},
                                                                   {"1", true},
                                                                   {"1.75", true},
                                                                   {"0", false},
                                                                   {"3", false},
                                                                   {"-1", false},
                                                                   {"1e0", false}});
  check(R"({"type": "number", "exclusiveMinimum": -1.5, "exclusiveMaximum": -1.25})",
        {{"-1.5", false}, {"-1.4", true}, {"-1.25", false}, {"-1.26", true}, {"-1.3", true}});
  // 0.1 as a double is slightly above 0.1, so the text "0.1" equals the bound exactly.
  check(R"({"type": "number", "exclusiveMaximum": 0.1, "minimum": 0})",
        {{"0.1", false}, {"0.09", true}, {"0", true}, {"0.0999999", true}});
  check(R"({"type": "number", "maximum": 0.1})", {{"0.1", true}, {"0.11", false}});
}

TEST(Automaton, NumbersWithoutBounds) {
  check(R"({"type": "number"})", {{"1.5e10", true},
                                  {"-0.25E-3", true},
                                  {"1e+99", true},
                                  {"1e100", false},
                                  {"1.", false},
                                  {".5", false},
                                  {"01", false},
                                  {"-", false},
                                  {"1.000000000000001", true},
                                  {"1.0000000000000001", false}});
}

TEST(Automaton, Strings) {
  check(R"({"type": "string"})", {{R"("")", true},
                                  {R"("plain")", true},
                                  {R"("tab\tand \"quotes\" \\ \/ \b\f\n\r")", true},
                                  {R"("\u00e9\u4e2d")", true},
                                  {R"("\ud83d\ude00")", true},
                                  {R"("\ud83d")", false},
                                  {R"("\ude00")", false},
                                  {R"("\x")", false},
                                  {"\"caf\xc3\xa9\"", true},
                                  {"\"\xf0\x9f\x98\x80\"", true},
                                  {"\"\xc0\xaf\"", false},
                                  {"\"\xed\xa0\x80\"", false},
                                  {"\"raw\ncontrol\"", false},
                                  {R"("unterminated)", false}});
}

TEST(Automaton, StringLengthsCountCharacters) {
  check(R"({"type": "string", "minLength": 2, "maxLength": 3})",
        {{R"("a")", false},
         {R"("ab")", true},
         {R"("abc")", true},
         {R"("abcd")", false},
         {"\"\xc3\xa9\xc3\xa9\xc3\xa9\"", true},
         {"\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"", false},
         {R"("\ud83d\ude00\ud83d\ude00\u0041")", true},
         {R"("\ud83d\ude00\ud83d\ude00\u0041\n")", false},
         {R"("\n\t")", true}});
  // At maxLength no character may start, not even an escape (it could never be finished).
  auto c = compile_for_bytes(schema_grammar(R"({"type": "string", "maxLength": 1})"));
  EXPECT_FALSE(prefix_accepted(c, R"("a\)"));
  EXPECT_FALSE(prefix_accepted(c, "\"a\xc3"));
  EXPECT_TRUE(bytes_accepted(c, R"("\ud83d\ude00")"));
  EXPECT_TRUE(bytes_accepted(c, R"("\\")"));
}

TEST(Automaton, ObjectsInPropertyOrder) {
  const char* schema = R"({"type": "object",
    "properties": {"b": {"type": "integer"}, "a": {"type": "string"}, "c": {"type": "boolean"}},
    "required": ["a"]})";
  check(schema, {{R"({"b":1,"a":"x","c":true})", true},
                 {R"({"a":"x"})", true},
                 {R"({"a":"x","c":false})", true},
                 {R"({"b":1,"a":"x"})", true},
                 {R"({"a":"x","b":1})", false},
                 {R"({"b":1})", false},
                 {R"({})", false},
                 {R"({"a":"x","d":1})", false},
                 {R"({"a":"x",})", false}});
}

TEST(Automaton, Whitespace) {
  const char* schema = R"({"type": "object", "properties": {"a": {"type": "array"}},
    "required": ["a"]})";
  check(schema, {{"{\n  \"a\": [\n    1,\n    2\n  ]\n}", true},
                 {"{ \"a\" : [ 1 , 2 ] }", true},
                 {"{\r\n\"a\":[]}", true},
                 {"{\n\n\"a\":[]}", false},
                 {"{                     \"a\":[]}", false},  // 21 spaces
                 {"{                    \"a\":[]}", true},    // 20
                 {" {\"a\":[]}", false},
                 {"{\"a\":[]} ", false}});
}

TEST(Automaton, AdditionalProperties) {
  check(R"({"type": "object", "properties": {"id": {"type": "integer"}},
           "additionalProperties": {"type": "string"}})",
        {{R"({"id":1,"x":"y"})", true},
         {R"({"x":"y","z":""})", true},
         {R"({"id":1,"x":2})", false},
         {R"({"x":"y","id":1})", false},  // a declared name as an additional key
         {R"({"i":"y"})", true},
         {R"({"idx":"y"})", true},
         {R"({"i\u0064":"y"})", false}});  // no escapes while the key could still be "id"
  check(R"({"type": "object", "properties": {"id": {"type": "integer"}}})",
        {{R"({"id":1})", true}, {R"({})", true}, {R"({"x":1})", false}});
  check(R"({"type": "object", "additionalProperties": true})",
        {{R"({"x":[1,{"y":null}],"z":"w"})", true}});
}

TEST(Automaton, RequiredOnlyAllowedAsAdditional) {
  check(R"({"type": "object", "required": ["k"], "additionalProperties": {"type": "integer"}})",
        {{R"({"k":1})", true}, {R"({})", false}, {R"({"k":1,"j":2})", true}});
}

TEST(Automaton, Arrays) {
  check(R"({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3})",
        {{"[]", false}, {"[1]", true}, {"[1,2,3]", true}, {"[1,2,3,4]", false}, {"[1,]", false}});
  check(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
           "items": false})",
        {{R"(["a",1])", true},
         {R"(["a"])", true},
         {R"([])", true},
         {R"(["a",1,2])", false},
         {R"([1])", false}});
  check(R"({"type": "array", "prefixItems": [{"const": 1}], "items": {"type": "string"},
           "minItems": 2})",
        {{R"([1,"x"])", true}, {R"([1])", false}, {R"([1,"x","y"])", true}});
}

TEST(Automaton, EnumsAndConst) {
  check(R"({"enum": ["red", "green", 1, 12, null, {"a": [1]}]})", {{R"("red")", true},
                                                                   {R"("green")", true},
                                                                   {R"("blue")", false},
                                                                   {"1", true},
                                                                   {"12", true},
                                                                   {"123", false},
                                                                   {"null", true},
                                                                   {R"({"a":[1]})", true}});
  check(R"({"const": "x"})", {{R"("x")", true}, {R"("y")", false}});
  // enum values the other keywords exclude are dropped
  check(R"({"type": "string", "enum": ["a", "bb", 3], "maxLength": 1})",
        {{R"("a")", true}, {R"("bb")", false}, {"3", false}});
}

TEST(Automaton, NullableAndAnyOf) {
  check(R"({"type": ["string", "null"]})", {{R"("x")", true}, {"null", true}, {"1", false}});
  check(R"({"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "boolean"}}]})",
        {{"5", true}, {"[true,false]", true}, {"[1]", false}, {"\"s\"", false}});
}

TEST(Automaton, WideAnyOf) {
  // More alternatives than the automaton starts at once (64) for one first byte.
  nlohmann::ordered_json alternatives = nlohmann::ordered_json::array();
  for (int i = 0; i < 150; ++i) {
    std::string value = "v";
    value += std::to_string(i);
    alternatives.push_back({{"const", value}});
  }
  auto c = compile_for_bytes(
      Grammar::from_json_schema(nlohmann::ordered_json{{"anyOf", alternatives}}, "wide"));
  EXPECT_TRUE(bytes_accepted(c, R"("v0")"));
  EXPECT_TRUE(bytes_accepted(c, R"("v77")"));
  EXPECT_TRUE(bytes_accepted(c, R"("v149")"));
  EXPECT_FALSE(bytes_accepted(c, R"("v150")"));
}

TEST(Automaton, RecursiveRef) {
  const char* schema = R"({"$defs": {"node": {"type": "object",
      "properties": {"v": {"type": "integer"},
                     "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
      "required": ["v"]}},
    "$ref": "#/$defs/node"})";
  check(schema, {{R"({"v":1})", true},
                 {R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[]}]})", true},
                 {R"({"v":1,"kids":[{}]})", false}});
}

TEST(Automaton, NestingIsBounded) {
  auto c = compile_for_bytes(Grammar::any_json_value());
  std::string deep(38, '[');
  deep += std::string(38, ']');
  EXPECT_TRUE(bytes_accepted(c, deep, false));
  EXPECT_FALSE(prefix_accepted(c, std::string(40, '[')));
}

TEST(Automaton, SequencesAndSpecialTokens) {
  auto g = Grammar::sequence({GrammarPart::literal("<tool_call>\n"),
                              GrammarPart::json_schema(nlohmann::ordered_json::parse(
                                  R"({"type": "object", "properties": {"x": {"type": "integer"}},
                                      "required": ["x"]})")),
                              GrammarPart::literal("\n</tool_call>")});
  auto c = compile_for_bytes(g);
  EXPECT_TRUE(bytes_accepted(c, "<tool_call>\n{\"x\":1}\n</tool_call>"));
  EXPECT_FALSE(bytes_accepted(c, "<tool_call>{\"x\":1}\n</tool_call>"));
  // The special token stands for the literal text, and only for it.
  GrammarMatcher m(c);
  TokenMask mask;
  m.fill_mask(mask);
  EXPECT_TRUE(mask.test(kByteToolCall));
  EXPECT_TRUE(mask.test('<'));
  EXPECT_EQ(mask.count(), 2u);
  ASSERT_TRUE(m.accept(kByteToolCall));
  m.fill_mask(mask);
  EXPECT_FALSE(mask.test(kByteToolCall));
  EXPECT_TRUE(mask.test('\n'));
  // Not inside a JSON string either.
  auto s = compile_for_bytes(schema_grammar(R"({"type": "string"})"));
  GrammarMatcher ms(s);
  ASSERT_TRUE(ms.accept('"'));
  ms.fill_mask(mask);
  EXPECT_FALSE(mask.test(kByteToolCall));
}

TEST(Automaton, EndTokensOnlyWhenComplete) {
  auto c = compile_for_bytes(schema_grammar(R"({"type": "integer"})"));
  GrammarMatcher m(c);
  TokenMask mask;
  m.fill_mask(mask);
  EXPECT_FALSE(mask.test(kByteEnd));
  ASSERT_TRUE(m.accept('4'));
  m.fill_mask(mask);
  EXPECT_TRUE(mask.test(kByteEnd));  // "4" is whole, "42" too
  EXPECT_TRUE(mask.test('2'));
  EXPECT_TRUE(m.can_end());
  EXPECT_FALSE(m.complete());
  auto o = compile_for_bytes(schema_grammar(R"({"type": "object"})"));
  GrammarMatcher mo(o);
  ASSERT_TRUE(mo.accept('{'));
  ASSERT_TRUE(mo.accept('}'));
  EXPECT_TRUE(mo.complete());
  mo.fill_mask(mask);
  EXPECT_EQ(mask.count(), 1u);
  EXPECT_TRUE(mask.test(kByteEnd));
  EXPECT_FALSE(mo.accept(' '));
  EXPECT_TRUE(mo.accept(kByteEnd));
  EXPECT_TRUE(mo.ended());
  mo.fill_mask(mask);
  EXPECT_EQ(mask.count(), 0u);
}

TEST(Automaton, MaskLogits) {
  auto c = compile_for_bytes(schema_grammar(R"({"enum": ["ab"]})"));
  GrammarMatcher m(c);
  std::vector<float> logits(300, 1.0f);  // wider than the vocabulary
  m.mask_logits(logits);
  for (size_t i = 0; i < logits.size(); ++i) {
    EXPECT_EQ(std::isinf(logits[i]), i != '"') << i;
  }
}

}  // namespace
}  // namespace bitdelta::constrain::testing
