// Constrained decoding on the real Qwen3 vocabulary: valid documents as the tokenizer encodes
// them are accepted token by token, invalid continuations are refused, Qwen3's <tool_call> can be
// written as its added token or spelled out in ordinary tokens, and on sampled states the mask
// equals accept() over the whole vocabulary.
#include <gtest/gtest.h>

#include "constrain_test_util.h"

namespace bitdelta::constrain::testing {
namespace {

using Json = nlohmann::ordered_json;

const char* kProduct = R"({"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40},
    "price": {"type": "number", "exclusiveMinimum": 0, "maximum": 10000},
    "currency": {"enum": ["USD", "EUR"]},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
    "stock": {"type": ["integer", "null"], "minimum": 0}},
  "required": ["name", "price", "currency"], "additionalProperties": false})";

// Feeds `tokens` checking the mask at each step; returns the index of the first refused token,
// or -1 when all were accepted.
int feed(GrammarMatcher& m, const std::vector<int32_t>& tokens) {
  TokenMask mask;
  for (size_t i = 0; i < tokens.size(); ++i) {
    m.fill_mask(mask);
    const bool allowed = mask.test(tokens[i]);
    GrammarMatcher copy = m;
    EXPECT_EQ(allowed, copy.accept(tokens[i])) << "token " << i;
    if (!m.accept(tokens[i])) return int(i);
  }
  return -1;
}

TEST(Qwen3Constrain, TokenizedDocumentsAreAccepted) {
  auto c = compile_for_qwen(schema_grammar(kProduct));
  const char* documents[] = {
      R"({"name": "Desk lamp", "price": 24.99, "currency": "USD", "tags": ["home", "light"], "stock": 12})",
      "{\n  \"name\": \"Café crème — 250 g\",\n  \"price\": 7,\n  \"currency\": \"EUR\",\n  "
      "\"stock\": null\n}",
      R"({"name":"\u00e9t\u00e9 \"quoted\"","price":0.5,"currency":"EUR","tags":[]})",
      R"({"name": "日本語の名前", "price": 10000, "currency": "USD"})",
  };
  for (const char* doc : documents) {
    GrammarMatcher m(c);
    const auto tokens = qwen3_tokenizer().encode(doc);
    EXPECT_EQ(feed(m, tokens), -1) << doc;
    EXPECT_TRUE(m.complete()) << doc;
    TokenMask mask;
    m.fill_mask(mask);
    EXPECT_EQ(mask.count(), 2u);  // <|im_end|> and <|endoftext|>
    EXPECT_TRUE(m.accept(kQwenImEnd));
  }
}

TEST(Qwen3Constrain, InvalidContinuationsAreRefused) {
  auto c = compile_for_qwen(schema_grammar(kProduct));
  struct Bad {
    const char* valid_prefix;
    const char* continuation;
  };
  const Bad cases[] = {
      {R"({"name": "Desk lamp", )", R"("color": "red"})"},  // not a property
      {R"({"name": "Desk lamp", "price": )", "-3"},         // below the bound
      {R"({"name": "Desk lamp", "price": )", "0,"},         // 0 is excluded
      {R"({"name": "Desk lamp", "price": 1, "currency": )", R"("GBP")"},
      {R"({"name": "Desk lamp", "price": 1, )", R"("name")"},  // out of order / repeated
      {R"({"price": 1)", ""},                                  // name is required first
      {R"({"name": "Desk lamp", "price": 1, "currency": "USD")", ", }"},
      {R"({"name": "Desk lamp", "price": 1, "currency": "USD"})", "\n"},
      {R"({"name": "0123456789012345678901234567890123456789)", "0"},  // maxLength 40
  };
  for (const Bad& b : cases) {
    GrammarMatcher m(c);
    const auto prefix = qwen3_tokenizer().encode(b.valid_prefix);
    const int refused = feed(m, prefix);
    if (std::string(b.continuation).empty()) {
      EXPECT_NE(refused, -1) << b.valid_prefix;
      continue;
    }
    ASSERT_EQ(refused, -1) << b.valid_prefix;
    // Every way of writing the continuation fails somewhere: try its own tokenization and its
    // bytes one token each.
    EXPECT_NE(feed(m, qwen3_tokenizer().encode(b.continuation)), -1)
        << b.valid_prefix << " + " << b.continuation;
    std::vector<int32_t> byte_tokens;
    for (char ch : std::string(b.continuation))
      byte_tokens.push_back(qwen3_byte_token(uint8_t(ch)));
    GrammarMatcher again(c);
    ASSERT_EQ(feed(again, prefix), -1);
    EXPECT_NE(feed(again, byte_tokens), -1) << b.valid_prefix << " + " << b.continuation;
  }
}

std::shared_ptr<const CompiledGrammar> tool_call_grammar() {
  const Json weather = Json::parse(R"({"type": "object", "properties": {
      "name": {"const": "get_weather"}, "arguments": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}, "required": ["name", "arguments"]})");
  return compile_for_qwen(Grammar::sequence({GrammarPart::literal("<tool_call>\n"),
                                             GrammarPart::json_schema(weather, "tools[0]"),
                                             GrammarPart::literal("\n</tool_call>")}));
}

TEST(Qwen3Constrain, ToolCallLiteralAsAddedToken) {
  auto c = tool_call_grammar();
  ASSERT_TRUE(qwen3_vocab()->is_special(kQwenToolCall));  // added, though not "special"
  ASSERT_EQ(qwen3_vocab()->bytes(kQwenToolCall), "<tool_call>");
  const std::string call =
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
      "</tool_call>";
  const auto tokens = qwen3_tokenizer().encode(call);  // uses 151657 and 151658
  ASSERT_EQ(tokens.front(), kQwenToolCall);
  GrammarMatcher m(c);
  EXPECT_EQ(feed(m, tokens), -1);
  EXPECT_TRUE(m.complete());
  // The added token is allowed where the literal starts, and nowhere else.
  GrammarMatcher fresh(c);
  TokenMask mask;
  fresh.fill_mask(mask);
  EXPECT_TRUE(mask.test(kQwenToolCall));
  ASSERT_TRUE(fresh.accept(kQwenToolCall));
  fresh.fill_mask(mask);
  EXPECT_FALSE(mask.test(kQwenToolCall));
  EXPECT_FALSE(mask.test(151658));  // </tool_call> is not next
}

TEST(Qwen3Constrain, ToolCallLiteralAsPlainTokens) {
  auto c = tool_call_grammar();
  const std::string call =
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
      "</tool_call>";
  ASSERT_EQ(call.substr(0, 6) + call.substr(6, call.size() - 11) + call.substr(call.size() - 5),
            call);
  // Cut so that no piece holds "<tool_call>" whole, which the tokenizer would match as the
  // added token: "<tool_" + "call>\n{...}\n</tool_" + "call>".
  std::vector<int32_t> tokens;
  for (std::string_view piece :
       {std::string_view(call).substr(0, 6), std::string_view(call).substr(6, call.size() - 11),
        std::string_view(call).substr(call.size() - 5)}) {
    const auto t = qwen3_tokenizer().encode(piece);
    tokens.insert(tokens.end(), t.begin(), t.end());
  }
  for (int32_t t : tokens) ASSERT_FALSE(qwen3_vocab()->is_special(t));
  GrammarMatcher m(c);
  EXPECT_EQ(feed(m, tokens), -1);
  EXPECT_TRUE(m.complete());
  // Other special tokens never appear, and the end tokens only at the end.
  GrammarMatcher fresh(c);
  TokenMask mask;
  fresh.fill_mask(mask);
  for (int32_t id = 151643; id < qwen3_vocab()->size(); ++id) {
    EXPECT_EQ(mask.test(id), id == kQwenToolCall) << id;
  }
}

// Over the whole vocabulary: tokens in the mask are accepted, tokens outside it are refused.
size_t mismatches(const GrammarMatcher& m) {
  TokenMask mask;
  m.fill_mask(mask);
  size_t bad = 0;
  for (int32_t id = 0; id < mask.size(); ++id) {
    GrammarMatcher copy = m;
    bad += copy.accept(id) != mask.test(id);
  }
  return bad;
}

TEST(Qwen3Constrain, MaskEqualsAcceptOverTheVocabulary) {
  struct State {
    const char* schema;
    const char* prefix;
  };
  const State states[] = {
      {kProduct, ""},
      {kProduct, R"({"name": "Desk )"},                                  // inside a bounded string
      {kProduct, R"({"name": "0123456789012345678901234567890123456)"},  // near maxLength
      {kProduct, R"({"name": "x", "price": 12)"},                        // inside a bounded number
      {kProduct, R"({"name": "x", "price": 1, "currency": "USD", "tags": [)"},
      {R"({"properties": {"id": {"type": "integer"}}, "additionalProperties": {"type": "string"}})",
       R"({"i)"},  // an additional key that may still become "id"
      {R"({"type": "string", "minLength": 3})", R"("a)"},
      {R"({"type": "string"})", R"("\u00)"},
      {R"({"type": "string"})", "\"\xe4\xb8"},  // inside a UTF-8 character
      {R"({"type": "number"})", "-1.5e"},
      {R"({"enum": [1, 12, "x"]})", "1"},
  };
  const std::string long_string = R"({"type": "string", "maxLength": 400})";
  const std::string far = "\"" + std::string(150, 'a'), near = "\"" + std::string(390, 'a');
  for (const State& s : states) {
    GrammarMatcher m(compile_for_qwen(schema_grammar(s.schema)));
    for (char ch : std::string(s.prefix))
      ASSERT_TRUE(m.accept(qwen3_byte_token(uint8_t(ch)))) << s.prefix;
    EXPECT_EQ(mismatches(m), 0u) << s.schema << " after " << s.prefix;
  }
  for (const std::string& prefix : {far, near}) {  // one cache key far from maxLength
    auto c = compile_for_qwen(schema_grammar(long_string));
    GrammarMatcher m(c);
    for (char ch : prefix) ASSERT_TRUE(m.accept(qwen3_byte_token(uint8_t(ch))));
    EXPECT_EQ(mismatches(m), 0u) << prefix.size();
  }
}

TEST(Qwen3Constrain, MatchersForkAndShareTheCache) {
  auto c = compile_for_qwen(schema_grammar(kProduct));
  GrammarMatcher a(c);
  ASSERT_EQ(feed(a, qwen3_tokenizer().encode(R"({"name": ")")), -1);
  GrammarMatcher b = a;  // n > 1 choices of one prompt
  ASSERT_EQ(feed(a, qwen3_tokenizer().encode(R"(A", "price": 1, "currency": "USD"})")), -1);
  ASSERT_EQ(feed(b, qwen3_tokenizer().encode(R"(B", "price": 2, "currency": "EUR"})")), -1);
  EXPECT_TRUE(a.complete());
  EXPECT_TRUE(b.complete());
  const auto stats = c->cache_stats();
  EXPECT_GT(stats.hits, 0u);
  EXPECT_GT(stats.entries, 0u);
}

}  // namespace
}  // namespace bitdelta::constrain::testing
