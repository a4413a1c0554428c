#include "constrain/schema_compiler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "util/error.h"

namespace bitdelta::constrain::detail {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kSupported =
    "type, enum, const, properties, required, additionalProperties, items, prefixItems, "
    "minItems, maxItems, minLength, maxLength, minimum, maximum, exclusiveMinimum, "
    "exclusiveMaximum, anyOf, oneOf, allOf with one schema, $ref within the schema, $defs, "
    "definitions; ignored: description, title, default, examples, $schema, $id, $comment, "
    "strict, readOnly, writeOnly, deprecated";

const std::set<std::string, std::less<>> kAnnotations = {
    "description", "title",    "default",   "examples",   "$schema", "$id",        "$comment",
    "strict",      "readOnly", "writeOnly", "deprecated", "$defs",   "definitions"};
const std::set<std::string, std::less<>> kCombinators = {"$ref", "anyOf", "oneOf", "allOf"};
const std::set<std::string, std::less<>> kObjectWords = {"properties", "required",
                                                         "additionalProperties"};
const std::set<std::string, std::less<>> kArrayWords = {"items", "prefixItems", "minItems",
                                                        "maxItems"};
const std::set<std::string, std::less<>> kStringWords = {"minLength", "maxLength"};
const std::set<std::string, std::less<>> kNumberWords = {"minimum", "maximum", "exclusiveMinimum",
                                                         "exclusiveMaximum"};
const std::set<std::string, std::less<>> kValueWords = {"type", "enum", "const"};

bool is_known(std::string_view key) {
  for (const auto* set : {&kAnnotations, &kCombinators, &kObjectWords, &kArrayWords, &kStringWords,
                          &kNumberWords, &kValueWords}) {
    if (set->count(key)) return true;
  }
  return false;
}

// RFC 6901 escaping of one pointer segment.
std::string escape_segment(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string where_text(const std::string& pointer) {
  return pointer.empty() ? "the schema root" : pointer;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += char(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

long double exact_number(const Json& v) {
  if (v.is_number_unsigned()) return (long double)v.get<uint64_t>();
  if (v.is_number_integer()) return (long double)v.get<int64_t>();
  return v.get<double>();
}

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += (uint8_t(c) & 0xC0) != 0x80;
  return n;
}

class SchemaCompiler {
 public:
  SchemaCompiler(GraphBuilder& builder, const Json& root, std::string_view where)
      : b_(builder), root_(root), where_(where) {}

  uint32_t compile(const Json& s, const std::string& ptr) {
    if (s.is_boolean()) {
      if (s.get<bool>()) return b_.any_value();
      error(ptr, "the schema false admits no value; remove it or give a schema that admits one");
    }
    if (!s.is_object())
      error(ptr, fmt::format("a schema must be an object or a boolean, not {}", s.type_name()));
    std::string combinator;
    for (const auto& [key, value] : s.items()) {
      if (!is_known(key)) {
        fail("{}: '{}' at {} is not supported (supported: {})", where_, key, where_text(ptr),
             kSupported);
      }
      if (kCombinators.count(key)) {
        if (!combinator.empty()) {
          fail(
              "{}: '{}' together with '{}' at {} is not supported: nest one inside the other "
              "(e.g. an anyOf whose alternatives use $ref)",
              where_, combinator, key, where_text(ptr));
        }
        combinator = key;
      }
    }
    if (!combinator.empty()) {
      for (const auto& [key, value] : s.items()) {
        if (kAnnotations.count(key) || key == combinator) continue;
        fail("{}: '{}' beside '{}' at {} is not supported: move '{}' into {}", where_, key,
             combinator, where_text(ptr), key,
             combinator == "$ref" ? "the referenced schema" : "each alternative");
      }
      if (combinator == "$ref") return compile_ref(s["$ref"], ptr);
      return compile_combinator(s[combinator], combinator, ptr);
    }
    if (s.contains("enum") || s.contains("const")) return compile_enum(s, ptr);
    return compile_types(s, ptr);
  }

 private:
  [[noreturn]] void error(const std::string& ptr, const std::string& what) {
    fail("{}: {} (at {})", where_, what, where_text(ptr));
  }

  uint32_t compile_ref(const Json& ref, const std::string& ptr) {
    if (!ref.is_string()) error(ptr + "/$ref", "'$ref' must be a string");
    const std::string text = ref.get<std::string>();
    if (text.empty() || text[0] != '#') {
      fail(
          "{}: the external $ref '{}' at {} is not supported (only references within the "
          "schema, such as '#/$defs/name' or '#/definitions/name')",
          where_, text, where_text(ptr));
    }
    const std::string pointer = percent_decode(std::string_view(text).substr(1));
    if (!pointer.empty() && pointer[0] != '/') {
      fail(
          "{}: the $ref '{}' at {} names an anchor, which is not supported; refer to "
          "'#/$defs/name' instead",
          where_, text, where_text(ptr));
    }
    if (auto it = refs_.find(pointer); it != refs_.end()) return it->second;
    const Json* target = nullptr;
    try {
      const Json::json_pointer jp(pointer);
      if (root_.contains(jp)) target = &root_.at(jp);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: the $ref '{}' at {} is not a valid JSON pointer ({})", where_, text,
           where_text(ptr), e.what());
    }
    if (target == nullptr) {
      fail("{}: the $ref '{}' at {} points to nothing in the schema; add it under $defs", where_,
           text, where_text(ptr));
    }
    const uint32_t alias = b_.reserve_choice();
    refs_[pointer] = alias;
    b_.set_alternatives(alias, {compile(*target, pointer)});
    return alias;
  }

  uint32_t compile_combinator(const Json& list, const std::string& name, const std::string& ptr) {
    const std::string at = ptr + "/" + name;
    if (!list.is_array() || list.empty())
      error(at, fmt::format("'{}' must be a non-empty array "
                            "of schemas",
                            name));
    if (name == "allOf") {
      if (list.size() != 1) {
        fail(
            "{}: 'allOf' with {} schemas at {} is not supported (only one); merge them into "
            "one schema",
            where_, list.size(), where_text(ptr));
      }
      return compile(list[0], at + "/0");
    }
    // oneOf is generated as anyOf: a document matching two alternatives would break oneOf, so
    // its alternatives should exclude one another (docs/structured-output.md).
    std::vector<uint32_t> alternatives;
    for (size_t i = 0; i < list.size(); ++i) {
      alternatives.push_back(compile(list[i], at + "/" + std::to_string(i)));
    }
    return b_.choice(std::move(alternatives));
  }

  uint32_t compile_enum(const Json& s, const std::string& ptr) {
    std::vector<Json> values;
    if (s.contains("enum")) {
      const Json& e = s["enum"];
      if (!e.is_array() || e.empty()) {
        error(ptr + "/enum", "'enum' must be a non-empty array; an empty one admits no value");
      }
      values.assign(e.begin(), e.end());
    }
    if (s.contains("const")) {
      const Json& c = s["const"];
      if (!values.empty() && std::find(values.begin(), values.end(), c) == values.end()) {
        error(ptr, "'const' is not one of the 'enum' values, so no value satisfies both");
      }
      values = {c};
    }
    Json rest = s;
    rest.erase("enum");
    rest.erase("const");
    const uint32_t constraint = compile_types(rest, ptr);
    std::vector<std::string> texts;
    for (const Json& v : values) {
      if (constraint != b_.any_value() && !fits(constraint, v, 0)) continue;
      try {
        texts.push_back(v.dump());
      } catch (const nlohmann::json::exception& e) {
        error(ptr, fmt::format("an enum value cannot be written as JSON ({})", e.what()));
      }
    }
    if (texts.empty()) {
      error(ptr, fmt::format("none of the {} values satisfies the other keywords there",
                             s.contains("const") ? "'const'" : "'enum'"));
    }
    return b_.literal(std::move(texts), false);
  }

  // The value's types from 'type', or from the keywords present when there is none.
  uint32_t compile_types(const Json& s, const std::string& ptr) {
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
      auto any_of = [&](const auto& words) {
        for (const auto& [key, value] : s.items()) {
          if (words.count(key)) return true;
        }
        return false;
      };
      if (any_of(kObjectWords)) types.push_back("object");
      if (any_of(kArrayWords)) types.push_back("array");
      if (any_of(kStringWords)) types.push_back("string");
      if (any_of(kNumberWords)) types.push_back("number");
      if (types.empty()) return b_.any_value();
    }
    const bool has_number = std::find(types.begin(), types.end(), "number") != types.end();
    std::vector<uint32_t> nodes;
    std::set<std::string> done;
    for (const std::string& type : types) {
      if (!done.insert(type).second) continue;
      if (type == "object") {
        nodes.push_back(compile_object(s, ptr));
      } else if (type == "array") {
        nodes.push_back(compile_array(s, ptr));
      } else if (type == "string") {
        nodes.push_back(compile_string(s, ptr));
      } else if (type == "number" || type == "integer") {
        if (type == "integer" && has_number) continue;  // every integer is a number
        nodes.push_back(compile_number(s, ptr, type == "integer"));
      } else if (type == "boolean") {
        nodes.push_back(b_.literal({"true", "false"}, false));
      } else if (type == "null") {
        nodes.push_back(b_.literal({"null"}, false));
      } else {
        error(ptr + "/type", fmt::format("unknown type '{}' (types: object, array, string, "
                                         "number, integer, boolean, null)",
                                         type));
      }
    }
    return nodes.size() == 1 ? nodes[0] : b_.choice(std::move(nodes));
  }

  uint32_t count(const Json& s, const char* key, const std::string& ptr, uint32_t absent) {
    if (!s.contains(key)) return absent;
    const Json& v = s[key];
    const long double n = v.is_number() ? exact_number(v) : -1;
    if (!(n >= 0) || n != std::floor(n)) {
      error(ptr + "/" + key, fmt::format("'{}' must be a non-negative integer", key));
    }
    return n >= 1e9L ? kUnbounded - 1 : uint32_t(n);
  }

  uint32_t compile_object(const Json& s, const std::string& ptr) {
    uint32_t additional = kNone;
    if (s.contains("additionalProperties")) {
      const Json& a = s["additionalProperties"];
      if (a.is_boolean()) {
        additional = a.get<bool>() ? b_.any_value() : kNone;
      } else {
        additional = compile(a, ptr + "/additionalProperties");
      }
    }
    std::vector<Property> props;
    if (s.contains("properties")) {
      const Json& p = s["properties"];
      if (!p.is_object()) error(ptr + "/properties", "'properties' must be an object of schemas");
      for (const auto& [name, sub] : p.items()) {
        Property prop;
        prop.name = name;
        try {
          prop.key_json = Json(name).dump();
        } catch (const nlohmann::json::exception&) {
          error(ptr + "/properties", "a property name is not valid UTF-8");
        }
        prop.value = compile(sub, ptr + "/properties/" + escape_segment(name));
        props.push_back(std::move(prop));
      }
    }
    if (s.contains("required")) {
      const Json& r = s["required"];
      if (!r.is_array()) error(ptr + "/required", "'required' must be an array of names");
      std::set<std::string> seen;
      for (const Json& name : r) {
        if (!name.is_string()) error(ptr + "/required", "'required' must be an array of names");
        const std::string n = name.get<std::string>();
        if (!seen.insert(n).second) continue;
        auto it = std::find_if(props.begin(), props.end(),
                               [&](const Property& x) { return x.name == n; });
        if (it != props.end()) {
          it->required = true;
          continue;
        }
        if (additional == kNone) {
          fail(
              "{}: 'required' at {} names '{}', which is not in 'properties' while "
              "additionalProperties is false (or absent, which counts as false here): add it "
              "to 'properties'",
              where_, where_text(ptr), n);
        }
        // Required but only allowed as an additional property: generate it after the others.
        Property prop;
        prop.name = n;
        prop.key_json = Json(n).dump();
        prop.value = additional;
        prop.required = true;
        props.push_back(std::move(prop));
      }
    }
    return b_.object(std::move(props), additional);
  }

  uint32_t compile_array(const Json& s, const std::string& ptr) {
    std::vector<uint32_t> prefix;
    if (s.contains("prefixItems")) {
      const Json& p = s["prefixItems"];
      if (!p.is_array()) error(ptr + "/prefixItems", "'prefixItems' must be an array of schemas");
      for (size_t i = 0; i < p.size(); ++i) {
        prefix.push_back(compile(p[i], ptr + "/prefixItems/" + std::to_string(i)));
      }
    }
    uint32_t items = b_.any_value();
    if (s.contains("items")) {
      const Json& it = s["items"];
      if (it.is_array()) {
        error(ptr + "/items",
              "an array under 'items' (the draft-07 tuple form) is not "
              "supported; use 'prefixItems'");
      }
      items = it.is_boolean() && !it.get<bool>() ? kNone : compile(it, ptr + "/items");
    }
    const uint32_t min_items = count(s, "minItems", ptr, 0);
    uint32_t max_items = count(s, "maxItems", ptr, kUnbounded);
    if (min_items > max_items) {
      error(ptr, fmt::format("minItems {} > maxItems {}: no array satisfies both", min_items,
                             max_items));
    }
    if (items == kNone) {
      if (min_items > prefix.size()) {
        error(ptr, fmt::format("minItems {} needs more items than the {} of 'prefixItems', and "
                               "'items' is false",
                               min_items, prefix.size()));
      }
      max_items = std::min<uint32_t>(max_items, uint32_t(prefix.size()));
    }
    return b_.array(std::move(prefix), items, min_items, max_items);
  }

  uint32_t compile_string(const Json& s, const std::string& ptr) {
    const uint32_t min_length = count(s, "minLength", ptr, 0);
    const uint32_t max_length = count(s, "maxLength", ptr, kUnbounded);
    if (min_length > max_length) {
      error(ptr, fmt::format("minLength {} > maxLength {}: no string satisfies both", min_length,
                             max_length));
    }
    return b_.string(min_length, max_length);
  }

  uint32_t compile_number(const Json& s, const std::string& ptr, bool integer) {
    std::vector<NumberBound> lower, upper;
    std::string written;
    for (const char* key : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
      if (!s.contains(key)) continue;
      const Json& v = s[key];
      const std::string_view k(key);
      if (v.is_boolean()) {
        error(ptr + "/" + key, fmt::format("'{}' as a boolean (draft 4) is not supported; give "
                                           "the bound itself as a number",
                                           key));
      }
      if (!v.is_number()) error(ptr + "/" + key, fmt::format("'{}' must be a number", key));
      NumberBound b{exact_number(v), k.starts_with("exclusive")};
      (k.find("inimum") != std::string_view::npos ? lower : upper).push_back(b);
      written += fmt::format("{}{} {}", written.empty() ? "" : ", ", key, v.dump());
    }
    NumberSpec spec;
    if (!make_number_spec(integer, std::move(lower), std::move(upper), spec)) {
      fail(
          "{}: no {} at {} satisfies {} (generated numbers also stay within |x| < 1e15, with "
          "at most 15 fraction digits)",
          where_, integer ? "integer" : "number", where_text(ptr), written);
    }
    return b_.number(std::move(spec));
  }

  // Whether `v` is a value of the grammar at `node` (which enum values to keep).
  bool fits(uint32_t node, const Json& v, int depth) const {
    if (depth > 64) return false;
    const Node& n = b_.node(node);
    switch (n.kind) {
      case NodeKind::kLiteral:
        return std::find(n.texts.begin(), n.texts.end(), v.dump()) != n.texts.end();
      case NodeKind::kString: {
        if (!v.is_string()) return false;
        const std::string& text = v.get_ref<const std::string&>();
        const size_t length = utf8_length(text);
        return length >= n.min_length && length <= n.max_length;
      }
      case NodeKind::kNumber:
        return v.is_number() && number_value_fits(n.number, exact_number(v), v.is_number_integer());
      case NodeKind::kObject: {
        if (!v.is_object()) return false;
        for (const Property& p : n.props) {
          if (p.required && !v.contains(p.name)) return false;
        }
        for (auto member = v.begin(); member != v.end(); ++member) {
          const std::string& key = member.key();
          auto it = std::find_if(n.props.begin(), n.props.end(),
                                 [&](const Property& p) { return p.name == key; });
          const uint32_t target = it != n.props.end() ? it->value : n.additional;
          if (target == kNone || !fits(target, member.value(), depth + 1)) return false;
        }
        return true;
      }
      case NodeKind::kArray: {
        if (!v.is_array() || v.size() < n.min_items || v.size() > n.max_items) return false;
        for (size_t k = 0; k < v.size(); ++k) {
          const uint32_t item = n.item_node(uint32_t(k));
          if (item == kNone || !fits(item, v[k], depth + 1)) return false;
        }
        return true;
      }
      case NodeKind::kChoice:
        for (uint32_t c : n.children) {
          if (fits(c, v, depth + 1)) return true;
        }
        return false;
      default:
        return false;
    }
  }

  GraphBuilder& b_;
  const Json& root_;
  std::string where_;
  std::map<std::string, uint32_t> refs_;  // $ref pointer -> its node
};

}  // namespace

uint32_t compile_json_schema(GraphBuilder& builder, const nlohmann::ordered_json& schema,
                             std::string_view where) {
  SchemaCompiler compiler(builder, schema, where);
  return compiler.compile(schema, "");
}

}  // namespace bitdelta::constrain::detail
