// Checks a JSON value against a JSON Schema of the subset the grammar compiler supports
// (docs/structured-output.md), for output the grammar did not constrain, such as tool-call
// arguments a model wrote freely. The check is on the parsed value: key order, whitespace and
// number spelling do not matter.
//
// Where this project reads JSON Schema its own way, the validator agrees with the compiler
// (schema_compiler.cc), not with Draft 2020-12:
//   - additionalProperties absent means false: {"type": "object"} admits only {};
//   - without 'type', the type follows from the keywords present (properties/required → object,
//     items/prefixItems/minItems/maxItems → array, minLength/maxLength → string, the bounds →
//     number; several → any of them), so {"maxLength": 3} refuses 5;
//   - oneOf is checked as anyOf (a value matching two alternatives passes).
// Otherwise as Draft 2020-12: an integer is a number with no fraction part (1.0 is one); enum and
// const compare by value (1 equals 1.0, true does not equal 1); lengths count Unicode code points;
// bounds are compared exactly. The grammar's generation limits (15 digits, nesting depth, more
// than 64 declared names) do not apply. Contradictions the compiler refuses (minLength >
// maxLength, 'const' outside 'enum', ...) are not refused here: no value satisfies them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace bitdelta::constrain {

// Returns "" when `value` is valid against `schema`, else a message naming the first problem and
// its JSON pointer into `value` ("/city: 15 characters, more than maxLength 12"; "(root)" for
// the value itself). Throws Error (util/error.h) for a schema outside the supported subset or
// malformed, worded as the compiler words it but without its leading "where: " (e.g. "'pattern'
// at /properties/zip is not supported (supported: ...)"), whatever the value. Only the parts of
// the schema reachable from its root (through $ref) are checked, as the compiler does.
std::string validation_error(const nlohmann::json& value, const nlohmann::json& schema);

}  // namespace bitdelta::constrain
