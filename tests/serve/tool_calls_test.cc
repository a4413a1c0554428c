// ToolCallParser: the model's tool calls in both syntaxes, fed whole or a character at a time
// (as a stream delivers them), with text around them, calls spelled another way, unknown names
// and calls cut short.
#include "serve/tool_calls.h"

#include <gtest/gtest.h>

namespace bitdelta {
namespace {

using Kind = ToolCallParser::Event::Kind;

struct Parsed {
  std::string text;
  std::vector<std::pair<std::string, std::string>> calls;  // name, arguments
  int ends = 0;
};

Parsed parse(const ToolCallSyntax& syntax, std::string_view output, size_t piece) {
  ToolCallParser parser(syntax, {"get_weather", "search"});
  std::vector<ToolCallParser::Event> events;
  for (size_t i = 0; i < output.size(); i += piece) {
    for (auto& e : parser.feed(output.substr(i, piece))) events.push_back(std::move(e));
  }
  for (auto& e : parser.finish()) events.push_back(std::move(e));
  Parsed p;
  for (const auto& e : events) {
    if (e.kind == Kind::kText) p.text += e.text;
    if (e.kind == Kind::kCallStart) {
      EXPECT_EQ(e.call, static_cast<int>(p.calls.size()));
      p.calls.push_back({e.text, ""});
    }
    if (e.kind == Kind::kArguments) p.calls.at(static_cast<size_t>(e.call)).second += e.text;
    if (e.kind == Kind::kCallEnd) ++p.ends;
  }
  return p;
}

const ToolCallSyntax kQwen3{"<tool_call>", "</tool_call>", "arguments", false};
const ToolCallSyntax kLlama31{"", "", "parameters", true};

TEST(ToolCallParser, Qwen3CallsWithTextAroundThemWholeOrCharByChar) {
  const std::string out =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Pa}ris\\\"\", \"days\": [1, {\"x\": 2}]}}\n</tool_call>\n<tool_call>\n{\"name\": "
      "\"search\", \"arguments\": {}}\n</tool_call>";
  for (size_t piece : {out.size(), size_t(1), size_t(3), size_t(7)}) {
    const Parsed p = parse(kQwen3, out, piece);
    EXPECT_EQ(p.text, "Let me check.") << piece;
    ASSERT_EQ(p.calls.size(), 2u) << piece;
    EXPECT_EQ(p.calls[0].first, "get_weather");
    EXPECT_EQ(p.calls[0].second, "{\"city\": \"Pa}ris\\\"\", \"days\": [1, {\"x\": 2}]}");
    EXPECT_EQ(p.calls[1].first, "search");
    EXPECT_EQ(p.calls[1].second, "{}");
    EXPECT_EQ(p.ends, 2);
  }
}

TEST(ToolCallParser, OtherShapesUnknownNamesAndCutCalls) {
  // Keys in another order: parsed whole at the closing marker.
  Parsed p =
      parse(kQwen3, "<tool_call>{\"arguments\": {\"q\": 1}, \"name\": \"search\"}</tool_call>", 1);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].second, "{\"q\":1}");
  // An unknown function is text.
  p = parse(kQwen3, "<tool_call>\n{\"name\": \"rm\", \"arguments\": {}}\n</tool_call>", 2);
  EXPECT_TRUE(p.calls.empty());
  EXPECT_NE(p.text.find("\"rm\""), std::string::npos);
  // A call cut short before its name is text; after it, a call with partial arguments.
  p = parse(kQwen3, "Hi <tool_call>\n{\"na", 1);
  EXPECT_EQ(p.text, "Hi <tool_call>\n{\"na");
  p = parse(kQwen3, "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"ab", 1);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].second, "{\"q\": \"ab");
  EXPECT_EQ(p.ends, 0);
  // Text that only looks like the start of a marker comes out as text.
  p = parse(kQwen3, "a <tool b", 1);
  EXPECT_EQ(p.text, "a <tool b");
}

// Arguments that are not an object, arguments that never balance, and a call whose closing
// marker never comes lose no text.
TEST(ToolCallParser, OddArgumentsAndMissingEnds) {
  // JSON text as a string: unwrapped.
  Parsed p = parse(
      kQwen3,
      "<tool_call>\n{\"name\": \"search\", \"arguments\": \"{\\\"q\\\": 1}\"}\n</tool_call>", 1);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].second, "{\"q\": 1}");
  // A scalar is not arguments: the whole call is text.
  p = parse(kLlama31, "{\"name\": \"search\", \"parameters\": true}", 1);
  EXPECT_TRUE(p.calls.empty());
  EXPECT_EQ(p.text, "{\"name\": \"search\", \"parameters\": true}");
  // Unbalanced arguments stop at the closing marker; the text after it is still text.
  p = parse(kQwen3,
            "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": [1}\n</tool_call>after", 1);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.ends, 1);
  EXPECT_EQ(p.text, "after");
  // No closing marker: the call ends with the output, what followed its arguments is text.
  p = parse(kQwen3, "<tool_call>\n{\"name\": \"search\", \"arguments\": {}} and more", 3);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.ends, 1);
  EXPECT_EQ(p.text, " and more");
}

TEST(ToolCallParser, Llama31WholeReplyCalls) {
  for (size_t piece : {size_t(1), size_t(4), size_t(100)}) {
    Parsed p =
        parse(kLlama31, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}", piece);
    ASSERT_EQ(p.calls.size(), 1u) << piece;
    EXPECT_EQ(p.calls[0].second, "{\"city\": \"Rome\"}");
    EXPECT_EQ(p.text, "");
    p = parse(kLlama31, "<|python_tag|>{\"name\": \"search\", \"parameters\": {}}", piece);
    ASSERT_EQ(p.calls.size(), 1u) << piece;
    EXPECT_EQ(p.calls[0].first, "search");
    // A reply that is not a call is text, a JSON object included.
    p = parse(kLlama31, "It is sunny in {Rome}.", piece);
    EXPECT_TRUE(p.calls.empty());
    EXPECT_EQ(p.text, "It is sunny in {Rome}.");
    p = parse(kLlama31, "{\"answer\": 42}", piece);
    EXPECT_TRUE(p.calls.empty());
    EXPECT_EQ(p.text, "{\"answer\": 42}");
    // Keys in another order.
    p = parse(kLlama31, "{\"parameters\": {\"query\": \"x\"}, \"name\": \"search\"}", piece);
    ASSERT_EQ(p.calls.size(), 1u) << piece;
    EXPECT_EQ(p.calls[0].second, "{\"query\":\"x\"}");
  }
}

}  // namespace
}  // namespace bitdelta
