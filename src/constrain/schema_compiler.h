// JSON Schema (the subset in docs/structured-output.md) to grammar nodes. Internal to
// src/constrain; Grammar::from_json_schema is the public entry.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "constrain/grammar_builder.h"

namespace bitdelta::constrain::detail {

// Adds the nodes for one value valid against `schema` and returns the top one. Throws Error,
// the message starting with `where` and naming the construct and its JSON pointer.
uint32_t compile_json_schema(GraphBuilder& builder, const nlohmann::ordered_json& schema,
                             std::string_view where);

}  // namespace bitdelta::constrain::detail
