// RFC 8785 (JSON Canonicalization Scheme): the RFC's own examples — numbers (§3.2.2.3 and
// Appendix B), property sorting (§3.2.3), the complete example of §3.2.2/§3.2.4 — plus string
// escaping, integers beyond 2^53, invalid UTF-8 and a round-trip property over random doubles.
#include "util/canonical_json.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>

#include "support/test_support.h"
#include "util/error.h"

namespace bitdelta {
namespace {

using json = nlohmann::json;

std::string canonical_of_text(const std::string& text) { return canonical_json(json::parse(text)); }

// RFC 8785 Appendix B: IEEE-754 bit patterns and the ECMAScript text each must become.
TEST(CanonicalJson, NumbersOfAppendixB) {
  const std::pair<uint64_t, const char*> cases[] = {
      {0x0000000000000000, "0"},
      {0x8000000000000000, "0"},  // -0
      {0x0000000000000001, "5e-324"},
      {0x8000000000000001, "-5e-324"},
      {0x7fefffffffffffff, "1.7976931348623157e+308"},
      {0xffefffffffffffff, "-1.7976931348623157e+308"},
      {0x4340000000000000, "9007199254740992"},
      {0xc340000000000000, "-9007199254740992"},
      {0x4430000000000000, "295147905179352830000"},
      {0x44b52d02c7e14af5, "9.999999999999997e+22"},
      {0x44b52d02c7e14af6, "1e+23"},
      {0x44b52d02c7e14af7, "1.0000000000000001e+23"},
      {0x444b1ae4d6e2ef4e, "999999999999999700000"},
      {0x444b1ae4d6e2ef4f, "999999999999999900000"},
      {0x444b1ae4d6e2ef50, "1e+21"},
      {0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
      {0x3eb0c6f7a0b5ed8d, "0.000001"},
      {0x41b3de4355555553, "333333333.3333332"},
      {0x41b3de4355555554, "333333333.33333325"},
      {0x41b3de4355555555, "333333333.3333333"},
      {0x41b3de4355555556, "333333333.3333334"},
      {0x41b3de4355555557, "333333333.33333343"},
      {0xbecbf647612f3696, "-0.0000033333333333333333"},
      {0x43143ff3c1cb0959, "1424953923781206.2"},
  };
  for (const auto& [bits, expected] : cases) {
    const double v = std::bit_cast<double>(bits);
    EXPECT_EQ(ecmascript_number(v), expected) << std::hex << bits;
    EXPECT_EQ(canonical_json(json(v)), expected) << std::hex << bits;
  }
  // Appendix B's NaN and Infinity rows: not JSON, so errors.
  EXPECT_NE(testing::error_message([] {
              canonical_json(json(std::bit_cast<double>(uint64_t{0x7fffffffffffffff})));
            }).find("NaN"),
            std::string::npos);
  EXPECT_NE(testing::error_message([] {
              canonical_json(json(std::numeric_limits<double>::infinity()));
            }).find("infinite"),
            std::string::npos);
  EXPECT_NE(testing::error_message([] { ecmascript_number(-HUGE_VAL); }).find("infinity"),
            std::string::npos);
}

// §3.2.2.3: numbers are serialized as ECMAScript does, whatever their spelling in the input.
TEST(CanonicalJson, NumbersAsEcmaScriptWritesThem) {
  const std::pair<const char*, const char*> cases[] = {
      {"333333333.33333329", "333333333.3333333"},
      {"1E30", "1e+30"},
      {"4.50", "4.5"},
      {"2e-3", "0.002"},
      {"0.000000000000000000000000001", "1e-27"},
      {"1e21", "1e+21"},
      {"1e20", "100000000000000000000"},
      {"5e-324", "5e-324"},
      {"1.7976931348623157e308", "1.7976931348623157e+308"},
      {"-0", "0"},
      {"-0.0", "0"},
      {"0.1", "0.1"},
      {"1e-7", "1e-7"},
      {"1e-6", "0.000001"},
      {"123456789012345680000", "123456789012345680000"},
      {"1.5e300", "1.5e+300"},
      {"-12.75", "-12.75"},
      {"100", "100"},
      {"1.0", "1"},
  };
  for (const auto& [text, expected] : cases) EXPECT_EQ(canonical_of_text(text), expected) << text;
  EXPECT_EQ(ecmascript_number(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(canonical_json(json(-0.0)), "0");
}

// §3.2.2.3: JSON integers are written as the double they equal; an integer no double equals
// (beyond ±2^53 not all are representable) would change value, so canonicalization refuses it.
TEST(CanonicalJson, IntegersAreWrittenAsTheirDouble) {
  EXPECT_EQ(canonical_json(json(int64_t{9007199254740992})), "9007199254740992");
  EXPECT_EQ(canonical_json(json(int64_t{-9007199254740992})), "-9007199254740992");
  EXPECT_EQ(canonical_json(json(uint64_t{42})), "42");
  EXPECT_EQ(canonical_json(json(int64_t{-7})), "-7");
  // Above 2^53 but exactly a double: as ECMAScript writes that double.
  EXPECT_EQ(canonical_json(json(uint64_t{1} << 60)), "1152921504606847000");
  EXPECT_EQ(canonical_json(json(std::numeric_limits<int64_t>::min())), "-9223372036854776000");
  // Not exactly a double, but already the canonical text of one (the form of 5.3e16).
  EXPECT_EQ(canonical_json(json(uint64_t{53165205877497300})), "53165205877497300");
  for (const json& v :
       {json(int64_t{9007199254740993}), json(int64_t{-9007199254740993}),
        json(std::numeric_limits<int64_t>::max()), json(std::numeric_limits<uint64_t>::max())}) {
    EXPECT_NE(testing::error_message([&] { canonical_json(v); }).find("has no exact IEEE-754"),
              std::string::npos)
        << v.dump();
  }
  const std::string message = testing::error_message([] {
    canonical_json(json{{"a", {{"b", json::array({1, (uint64_t{1} << 60) + 1})}}}});
  });
  EXPECT_NE(message.find("a.b[1]"), std::string::npos) << message;
}

// §3.2.3: members sorted by the UTF-16 code units of their names, so U+1F600 (surrogates
// 0xD83D 0xDE00) comes before U+FB33, although its UTF-8 bytes (and code point) sort after.
TEST(CanonicalJson, PropertySortingOfSection323) {
  const std::string input = R"({
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\ud83d\ude00": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis"
  })";
  const std::string expected =
      "{\"\\r\":\"Carriage Return\","
      "\"1\":\"One\","
      "\"\xc2\x80\":\"Control\","
      "\"\xc3\xb6\":\"Latin Small Letter O With Diaeresis\","
      "\"\xe2\x82\xac\":\"Euro Sign\","
      "\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\","
      "\"\xef\xac\xb3\":\"Hebrew Letter Dalet With Dagesh\"}";
  EXPECT_EQ(canonical_of_text(input), expected);
}

// The complete example of §3.2.2 (input) and §3.2.4 (its canonical form).
TEST(CanonicalJson, CompleteExampleOfSection32) {
  const std::string input = R"({
    "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
    "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
    "literals": [null, true, false]
  })";
  const std::string expected =
      "{\"literals\":[null,true,false],"
      "\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],"
      "\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
  EXPECT_EQ(canonical_of_text(input), expected);
}

// §3.2.2.2: only the escapes JSON requires; other controls as lowercase \u00xx; "/", DEL and
// every non-ASCII character as they are.
TEST(CanonicalJson, StringEscaping) {
  EXPECT_EQ(canonical_json(json("q\"b\\/")), R"("q\"b\\/")");
  EXPECT_EQ(canonical_json(json("\b\f\n\r\t")), R"("\b\f\n\r\t")");
  EXPECT_EQ(canonical_json(json(std::string("\x00\x01\x1f\x7f", 4))),
            "\"\\u0000\\u0001\\u001f\x7f\"");
  EXPECT_EQ(canonical_json(json("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80")),
            "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
  EXPECT_EQ(canonical_json(json("")), "\"\"");
  // Escaped in the input, literal in the output.
  EXPECT_EQ(canonical_of_text(R"("\u00e9\u0041\/")"),
            "\"\xc3\xa9"
            "A/\"");
}

TEST(CanonicalJson, InvalidUtf8IsRefused) {
  const std::string bad[] = {
      "\xff",              // never valid
      "a\x80",             // stray continuation byte
      "\xc0\xaf",          // overlong "/"
      "\xe0\x80\xaf",      // overlong
      "\xed\xa0\x80",      // a surrogate (U+D800) encoded directly
      "\xf4\x90\x80\x80",  // above U+10FFFF
      "\xe2\x82",          // cut off
  };
  for (const std::string& s : bad) {
    EXPECT_NE(testing::error_message([&] { canonical_json(json(s)); }).find("not valid UTF-8"),
              std::string::npos)
        << "case " << (&s - bad);
    // In a member name too, naming where.
    const std::string message = testing::error_message([&] {
      canonical_json(json{{"outer", {{s, 1}}}});
    });
    EXPECT_NE(message.find("not valid UTF-8"), std::string::npos);
    EXPECT_NE(message.find("outer"), std::string::npos) << message;
  }
}

TEST(CanonicalJson, NestedArraysAndObjects) {
  EXPECT_EQ(canonical_of_text(R"( { "b" : [ 1 , { "d" : true , "c" : null } , [ ] ] ,
                                    "a" : { } , "aa": [[["x"]]] } )"),
            R"({"a":{},"aa":[[["x"]]],"b":[1,{"c":null,"d":true},[]]})");
  EXPECT_EQ(canonical_json(json::array()), "[]");
  EXPECT_EQ(canonical_json(json::object()), "{}");
  EXPECT_EQ(canonical_json(json(nullptr)), "null");
  // Prefixes sort first, and the sort is by units, not by length.
  EXPECT_EQ(canonical_of_text(R"({"ab":1,"a":2,"b":3,"B":4})"), R"({"B":4,"a":2,"ab":1,"b":3})");
  EXPECT_NE(testing::error_message([] {
              canonical_json(json::binary({1, 2}));
            }).find("binary"),
            std::string::npos);
}

// Canonicalizing is idempotent, and every number's text reads back as the same double.
TEST(CanonicalJson, RandomDoublesRoundTrip) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200000; ++i) {
    const double v = std::bit_cast<double>(rng());
    if (!std::isfinite(v)) continue;
    const std::string text = ecmascript_number(v);
    EXPECT_EQ(std::strtod(text.c_str(), nullptr), v == 0 ? 0.0 : v) << text;
    ASSERT_EQ(canonical_of_text(text), text);
  }
}

}  // namespace
}  // namespace bitdelta
