#include "constrain/validate.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "util/error.h"

namespace bitdelta::constrain {
namespace {

using Json = nlohmann::json;

// The subset and its wording follow schema_compiler.cc; keep the two in step.
constexpr std::string_view kSupported =
    "type, enum, const, properties, required, additionalProperties, items, prefixItems, "
    "minItems, maxItems, minLength, maxLength, minimum, maximum, exclusiveMinimum, "
    "exclusiveMaximum, anyOf, oneOf, allOf with one schema, $ref within the schema, $defs, "
    "definitions; ignored: description, title, default, examples, $schema, $id, $comment, "
    "strict, readOnly, writeOnly, deprecated";

enum class Group { kAnnotation, kCombinator, kValue, kObject, kArray, kString, kNumber, kUnknown };

// The keywords of each group, each between spaces.
constexpr std::pair<Group, std::string_view> kGroups[] = {
    {Group::kAnnotation,
     " description title default examples $schema $id $comment strict readOnly writeOnly "
     "deprecated $defs definitions "},
    {Group::kCombinator, " $ref anyOf oneOf allOf "},
    {Group::kValue, " type enum const "},
    {Group::kObject, " properties required additionalProperties "},
    {Group::kArray, " items prefixItems minItems maxItems "},
    {Group::kString, " minLength maxLength "},
    {Group::kNumber, " minimum maximum exclusiveMinimum exclusiveMaximum "}};

Group group_of(const std::string& key) {
  for (const auto& [group, words] : kGroups) {
    if (words.find(" " + key + " ") != std::string_view::npos) return group;
  }
  return Group::kUnknown;
}

const char* const kBounds[] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};

std::string where_text(const std::string& pointer) {
  return pointer.empty() ? "the schema root" : pointer;
}

// RFC 6901 escaping of one pointer segment.
std::string escape_segment(std::string_view s) {
  std::string out;
  for (char c : s) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return out;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(uint8_t(s[i + 1])) &&
        std::isxdigit(uint8_t(s[i + 2]))) {
      out += char(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// long double holds every int64, uint64 and double exactly, so comparisons are exact.
long double exact_number(const Json& v) {
  if (v.is_number_unsigned()) return (long double)v.get<uint64_t>();
  if (v.is_number_integer()) return (long double)v.get<int64_t>();
  return v.get<double>();
}

bool is_integer(const Json& v) {
  if (v.is_number_integer()) return true;
  if (!v.is_number_float()) return false;
  const double d = v.get<double>();
  return std::isfinite(d) && d == std::floor(d);
}

// JSON Schema equality: numbers by value (1 == 1.0), booleans apart from numbers.
bool same_value(const Json& a, const Json& b) {
  if (a.is_number() && b.is_number()) return exact_number(a) == exact_number(b);
  if (a.type() != b.type() || a.size() != b.size()) return false;
  if (a.is_array()) return std::equal(a.begin(), a.end(), b.begin(), same_value);
  if (!a.is_object()) return a == b;
  for (auto it = a.begin(); it != a.end(); ++it) {
    auto other = b.find(it.key());
    if (other == b.end() || !same_value(*it, *other)) return false;
  }
  return true;
}

std::string shown(const Json& v) {
  std::string text = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  return text.size() <= 60 ? text : text.substr(0, 57) + "...";
}

std::string problem(const std::string& at, const std::string& what) {
  return fmt::format("{}: {}", at.empty() ? "(root)" : at, what);
}

class Validator {
 public:
  explicit Validator(const Json& root) : root_(root) {}

  // Throws Error for anything outside the subset in `s` or what it reaches.
  void check(const Json& s, const std::string& ptr) {
    if (s.is_boolean()) return;
    if (!s.is_object())
      error(ptr, fmt::format("a schema must be an object or a boolean, not {}", s.type_name()));
    if (!checked_.insert(&s).second) return;
    std::string combinator;
    for (const auto& [key, value] : s.items()) {
      const Group group = group_of(key);
      if (group == Group::kUnknown) {
        fail("'{}' at {} is not supported (supported: {})", key, where_text(ptr), kSupported);
      }
      if (group != Group::kCombinator) continue;
      if (!combinator.empty()) {
        fail(
            "'{}' together with '{}' at {} is not supported: nest one inside the other (e.g. an "
            "anyOf whose alternatives use $ref)",
            combinator, key, where_text(ptr));
      }
      combinator = key;
    }
    if (!combinator.empty()) {
      for (const auto& [key, value] : s.items()) {
        if (key == combinator || group_of(key) == Group::kAnnotation) continue;
        fail("'{}' beside '{}' at {} is not supported: move '{}' into {}", key, combinator,
             where_text(ptr), key,
             combinator == "$ref" ? "the referenced schema" : "each alternative");
      }
      if (combinator == "$ref") return check_ref(s["$ref"], ptr);
      const Json& list = s[combinator];
      const std::string at = ptr + "/" + combinator;
      if (!list.is_array() || list.empty())
        error(at, fmt::format("'{}' must be a non-empty array of schemas", combinator));
      if (combinator == "allOf" && list.size() != 1) {
        fail(
            "'allOf' with {} schemas at {} is not supported (only one); merge them into one schema",
            list.size(), where_text(ptr));
      }
      for (size_t i = 0; i < list.size(); ++i) check(list[i], at + "/" + std::to_string(i));
      return;
    }
    if (s.contains("enum") && (!s["enum"].is_array() || s["enum"].empty()))
      error(ptr + "/enum", "'enum' must be a non-empty array; an empty one admits no value");
    for (const std::string& type : types_of(s, ptr)) {
      if (type == "object") {
        if (s.contains("additionalProperties") && !s["additionalProperties"].is_boolean())
          check(s["additionalProperties"], ptr + "/additionalProperties");
        if (s.contains("properties")) {
          if (!s["properties"].is_object())
            error(ptr + "/properties", "'properties' must be an object of schemas");
          for (const auto& [name, sub] : s["properties"].items())
            check(sub, ptr + "/properties/" + escape_segment(name));
        }
        if (s.contains("required") && (!s["required"].is_array() ||
                                       !std::all_of(s["required"].begin(), s["required"].end(),
                                                    [](const Json& n) { return n.is_string(); })))
          error(ptr + "/required", "'required' must be an array of names");
      } else if (type == "array") {
        if (s.contains("prefixItems")) {
          const Json& p = s["prefixItems"];
          if (!p.is_array())
            error(ptr + "/prefixItems", "'prefixItems' must be an array of schemas");
          for (size_t i = 0; i < p.size(); ++i)
            check(p[i], ptr + "/prefixItems/" + std::to_string(i));
        }
        if (s.contains("items")) {
          if (s["items"].is_array()) {
            error(ptr + "/items",
                  "an array under 'items' (the draft-07 tuple form) is not supported; use "
                  "'prefixItems'");
          }
          check(s["items"], ptr + "/items");
        }
        for (const char* key : {"minItems", "maxItems"}) check_count(s, key, ptr);
      } else if (type == "string") {
        for (const char* key : {"minLength", "maxLength"}) check_count(s, key, ptr);
      } else if (type == "number" || type == "integer") {
        for (const char* key : kBounds) {
          if (!s.contains(key)) continue;
          if (s[key].is_boolean()) {
            error(ptr + "/" + key, fmt::format("'{}' as a boolean (draft 4) is not supported; give "
                                               "the bound itself as a number",
                                               key));
          }
          if (!s[key].is_number())
            error(ptr + "/" + key, fmt::format("'{}' must be a number", key));
        }
      }
    }
  }

  std::string validate(const Json& v, const Json& s, const std::string& at) {
    if (s.is_boolean())
      return s.get<bool>() ? "" : problem(at, "no value is allowed here (schema false)");
    if (s.contains("$ref")) {
      const std::string& text = s["$ref"].get_ref<const std::string&>();
      const auto key = std::make_pair(&v, refs_.at(text));
      // Back at the same schema without going into the value: that path adds nothing (and would
      // not end), so it fails; another alternative may still match.
      if (std::find(active_.begin(), active_.end(), key) != active_.end())
        return problem(at, fmt::format("the $ref '{}' leads back to itself", text));
      active_.push_back(key);
      std::string result = validate(v, *key.second, at);
      active_.pop_back();
      return result;
    }
    if (s.contains("allOf")) return validate(v, s["allOf"][0], at);
    for (const char* name : {"anyOf", "oneOf"}) {
      if (!s.contains(name)) continue;
      std::string reasons;
      for (size_t i = 0; i < s[name].size(); ++i) {
        const std::string r = validate(v, s[name][i], at);
        if (r.empty()) return "";
        reasons += fmt::format("{}{}: {}", i == 0 ? "" : "; ", i, r);
      }
      return problem(at, fmt::format("matches no alternative of {} ({})", name, reasons));
    }
    if (s.contains("const") && !same_value(v, s["const"]))
      return problem(at, fmt::format("{} is not the const value {}", shown(v), shown(s["const"])));
    if (s.contains("enum")) {
      const Json& e = s["enum"];
      if (std::none_of(e.begin(), e.end(), [&](const Json& x) { return same_value(v, x); }))
        return problem(at, fmt::format("{} is not one of the enum values {}", shown(v), shown(e)));
    }
    const std::vector<std::string> types = types_of(s, "");
    if (types.empty()) return "";
    for (const std::string& type : types) {
      if (type == "object" && v.is_object()) return validate_object(v, s, at);
      if (type == "array" && v.is_array()) return validate_array(v, s, at);
      if (type == "string" && v.is_string()) return validate_string(v, s, at);
      if ((type == "number" && v.is_number()) || (type == "integer" && is_integer(v)))
        return validate_number(v, s, at);
      if ((type == "boolean" && v.is_boolean()) || (type == "null" && v.is_null())) return "";
    }
    return problem(at, fmt::format("expected {}, got {}", fmt::join(types, " or "), shown(v)));
  }

 private:
  [[noreturn]] void error(const std::string& ptr, const std::string& what) {
    fail("{} (at {})", what, where_text(ptr));
  }

  void check_ref(const Json& ref, const std::string& ptr) {
    if (!ref.is_string()) error(ptr + "/$ref", "'$ref' must be a string");
    const std::string text = ref.get<std::string>();
    if (refs_.count(text)) return;
    if (text.empty() || text[0] != '#') {
      fail(
          "the external $ref '{}' at {} is not supported (only references within the schema, "
          "such as '#/$defs/name' or '#/definitions/name')",
          text, where_text(ptr));
    }
    const std::string pointer = percent_decode(std::string_view(text).substr(1));
    if (!pointer.empty() && pointer[0] != '/') {
      fail(
          "the $ref '{}' at {} names an anchor, which is not supported; refer to '#/$defs/name' "
          "instead",
          text, where_text(ptr));
    }
    const Json* target = nullptr;
    try {
      const Json::json_pointer jp(pointer);
      if (root_.contains(jp)) target = &root_.at(jp);
    } catch (const nlohmann::json::exception& e) {
      fail("the $ref '{}' at {} is not a valid JSON pointer ({})", text, where_text(ptr), e.what());
    }
    if (target == nullptr) {
      fail("the $ref '{}' at {} points to nothing in the schema; add it under $defs", text,
           where_text(ptr));
    }
    refs_[text] = target;
    check(*target, pointer);
  }

  void check_count(const Json& s, const char* key, const std::string& ptr) {
    if (!s.contains(key)) return;
    const long double n = s[key].is_number() ? exact_number(s[key]) : -1;
    if (!(n >= 0) || n != std::floor(n))
      error(ptr + "/" + key, fmt::format("'{}' must be a non-negative integer", key));
  }

  // The types a schema (not a combinator) admits, from 'type' or the keywords present; none when
  // it admits any value. "integer" is left out beside "number", which covers it.
  std::vector<std::string> types_of(const Json& s, const std::string& ptr) {
    std::vector<std::string> types;
    if (s.contains("type")) {
      const Json& t = s["type"];
      if (t.is_string()) {
        types.push_back(t.get<std::string>());
      } else if (t.is_array() && !t.empty()) {
        for (const Json& e : t) {
          if (!e.is_string()) error(ptr + "/type", "'type' must list type names");
          types.push_back(e.get<std::string>());
        }
      } else {
        error(ptr + "/type", "'type' must be a type name or a non-empty array of them");
      }
    } else {
      const std::pair<Group, const char*> implied[] = {{Group::kObject, "object"},
                                                       {Group::kArray, "array"},
                                                       {Group::kString, "string"},
                                                       {Group::kNumber, "number"}};
      for (const auto& [group, type] : implied) {
        for (const auto& [key, value] : s.items()) {
          if (group_of(key) != group) continue;
          types.push_back(type);
          break;
        }
      }
    }
    static const std::set<std::string, std::less<>> kTypes = {
        "object", "array", "string", "number", "integer", "boolean", "null"};
    std::vector<std::string> out;
    const bool has_number = std::count(types.begin(), types.end(), "number") > 0;
    for (const std::string& type : types) {
      if (!kTypes.count(type)) {
        error(ptr + "/type", fmt::format("unknown type '{}' (types: object, array, string, number, "
                                         "integer, boolean, null)",
                                         type));
      }
      if ((type == "integer" && has_number) || std::count(out.begin(), out.end(), type)) continue;
      out.push_back(type);
    }
    return out;
  }

  std::string validate_object(const Json& v, const Json& s, const std::string& at) {
    if (s.contains("required")) {
      for (const Json& name : s["required"]) {
        if (!v.contains(name.get_ref<const std::string&>()))
          return problem(at, fmt::format("missing required property {}", shown(name)));
      }
    }
    const Json* properties = s.contains("properties") ? &s["properties"] : nullptr;
    for (const auto& [key, value] : v.items()) {
      const std::string child = at + "/" + escape_segment(key);
      std::string result;
      if (properties != nullptr && properties->contains(key)) {
        result = validate(value, (*properties)[key], child);
      } else if (s.contains("additionalProperties") && s["additionalProperties"] != false) {
        result = validate(value, s["additionalProperties"], child);
      } else {
        result = problem(child, fmt::format("property not allowed: it is not in 'properties' and "
                                            "additionalProperties is {}",
                                            s.contains("additionalProperties")
                                                ? "false"
                                                : "absent, which counts as false here"));
      }
      if (!result.empty()) return result;
    }
    return "";
  }

  std::string validate_array(const Json& v, const Json& s, const std::string& at) {
    if (std::string r = count_problem(v.size(), "items", s, "Items", at); !r.empty()) return r;
    const size_t prefix = s.contains("prefixItems") ? s["prefixItems"].size() : 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const std::string child = at + "/" + std::to_string(i);
      std::string result;
      if (i < prefix) {
        result = validate(v[i], s["prefixItems"][i], child);
      } else if (s.contains("items") && s["items"] == false) {
        result = problem(child, fmt::format("item not allowed: 'prefixItems' has {} and 'items' "
                                            "is false",
                                            prefix));
      } else if (s.contains("items")) {
        result = validate(v[i], s["items"], child);
      }
      if (!result.empty()) return result;
    }
    return "";
  }

  static std::string validate_string(const Json& v, const Json& s, const std::string& at) {
    size_t n = 0;  // code points: every byte but UTF-8 continuation bytes
    for (char c : v.get_ref<const std::string&>()) n += (uint8_t(c) & 0xC0) != 0x80;
    return count_problem(n, "characters", s, "Length", at);
  }

  // minItems/maxItems (`what` "Items") or minLength/maxLength ("Length") against a count `n`.
  static std::string count_problem(size_t n, const char* noun, const Json& s, const char* what,
                                   const std::string& at) {
    const std::string min = std::string("min") + what, max = std::string("max") + what;
    if (s.contains(min) && n < exact_number(s[min]))
      return problem(at, fmt::format("{} {}, fewer than {} {}", n, noun, min, s[min].dump()));
    if (s.contains(max) && n > exact_number(s[max]))
      return problem(at, fmt::format("{} {}, more than {} {}", n, noun, max, s[max].dump()));
    return "";
  }

  static std::string validate_number(const Json& v, const Json& s, const std::string& at) {
    const long double x = exact_number(v);
    const char* const broken[] = {"less than minimum", "not greater than exclusiveMinimum",
                                  "greater than maximum", "not less than exclusiveMaximum"};
    for (int k = 0; k < 4; ++k) {
      if (!s.contains(kBounds[k])) continue;
      const long double b = exact_number(s[kBounds[k]]);
      const bool ok = k == 0 ? x >= b : k == 1 ? x > b : k == 2 ? x <= b : x < b;
      if (!ok)
        return problem(at, fmt::format("{} is {} {}", v.dump(), broken[k], s[kBounds[k]].dump()));
    }
    return "";
  }

  const Json& root_;
  std::set<const Json*> checked_;
  std::map<std::string, const Json*> refs_;                  // $ref text -> its schema
  std::vector<std::pair<const Json*, const Json*>> active_;  // (value, $ref target) being checked
};

}  // namespace

std::string validation_error(const nlohmann::json& value, const nlohmann::json& schema) {
  Validator validator(schema);
  validator.check(schema, "");
  return validator.validate(value, schema, "");
}

}  // namespace bitdelta::constrain
