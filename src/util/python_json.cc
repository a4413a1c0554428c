#include "util/python_json.h"

namespace bitdelta {

namespace {

void write(const nlohmann::ordered_json& v, std::string& out, int indent, int depth) {
  // Python: without indent the separators are ", " and ": "; with one, "," then a new line.
  auto next_line = [&](int level) {
    out += '\n';
    out.append(static_cast<size_t>(indent * level), ' ');
  };
  if (v.is_object()) {
    if (v.empty()) {
      out += "{}";
      return;
    }
    out += '{';
    bool first = true;
    for (const auto& [key, item] : v.items()) {
      if (!first) out += indent > 0 ? "," : ", ";
      first = false;
      if (indent > 0) next_line(depth + 1);
      out += nlohmann::ordered_json(key).dump();
      out += ": ";
      write(item, out, indent, depth + 1);
    }
    if (indent > 0) next_line(depth);
    out += '}';
  } else if (v.is_array()) {
    if (v.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i > 0) out += indent > 0 ? "," : ", ";
      if (indent > 0) next_line(depth + 1);
      write(v[i], out, indent, depth + 1);
    }
    if (indent > 0) next_line(depth);
    out += ']';
  } else {
    // Strings escaped as Python escapes them with ensure_ascii=False; numbers in the shortest
    // form that reads back the same, as Python's repr (1.0 keeps its ".0", 1e-07 its exponent).
    out += v.dump();
  }
}

}  // namespace

std::string python_json_dumps(const nlohmann::ordered_json& value, int indent) {
  std::string out;
  write(value, out, indent, 0);
  return out;
}

}  // namespace bitdelta
