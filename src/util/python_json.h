// JSON text as Python's json.dumps(x, ensure_ascii=False) writes it: ", " between items, ": "
// after keys, keys in their given order, non-ASCII characters as themselves. Chat templates
// render tools with Jinja's `tojson`, which Hugging Face defines as that call; rendering a prompt
// byte for byte as the model was trained needs the same text.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace bitdelta {

// indent > 0: json.dumps(x, indent=indent, ensure_ascii=False): one item per line, "," and ": "
// separators, empty containers as {} and [].
std::string python_json_dumps(const nlohmann::ordered_json& value, int indent = 0);

}  // namespace bitdelta
