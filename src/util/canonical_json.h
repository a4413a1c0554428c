// The JSON Canonicalization Scheme (JCS, RFC 8785): one byte sequence per JSON value, so that a
// signature over it survives re-serialization (another key order, whitespace, number spelling).
// Compute receipts (docs/receipts.md) are signed and stored in this form.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace bitdelta {

// `value` in canonical form (RFC 8785 §3.2): no whitespace; object members sorted by their
// names' UTF-16 code units; strings with only the escapes JSON requires (\" \\ \b \f \n \r \t,
// other controls as \u00xx) and every other character as UTF-8; numbers as ECMAScript's
// Number.prototype.toString writes the IEEE-754 double (shortest round-trip digits, "1e+21",
// "0.000001", -0 as "0"). Integer values are written as the nearest double; one that this would
// change (e.g. 2^53 + 1, read as 2^53; never one within ±2^53) is refused.
// Throws Error for NaN or infinity, invalid UTF-8, such an integer, or a binary value.
std::string canonical_json(const nlohmann::json& value);

// One number as ECMAScript writes it (Number.prototype.toString), e.g. 1e21 → "1e+21",
// 0.1 + 0.2 → "0.30000000000000004". Throws Error for NaN or infinity.
std::string ecmascript_number(double value);

}  // namespace bitdelta
