#include "util/python_json.h"

namespace bitdelta {

namespace {

void write(const nlohmann::ordered_json& v, std::string& out) {
  if (v.is_object()) {
    out += '{';
    bool first = true;
    for (const auto& [key, item] : v.items()) {
      if (!first) out += ", ";
      first = false;
      out += nlohmann::ordered_json(key).dump();
      out += ": ";
      write(item, out);
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i > 0) out += ", ";
      write(v[i], out);
    }
    out += ']';
  } else {
    // Strings escaped as Python escapes them with ensure_ascii=False; numbers in the shortest
    // form that reads back the same, as Python's repr (1.0 keeps its ".0", 1e-07 its exponent).
    out += v.dump();
  }
}

}  // namespace

std::string python_json_dumps(const nlohmann::ordered_json& value) {
  std::string out;
  write(value, out);
  return out;
}

}  // namespace bitdelta
