// JSON numbers under JSON Schema bounds, one byte at a time, with no dead ends: every prefix the
// automaton lets through can still be completed to a number in range.
//
// Values are kept exactly, in integer units of 10^-frac_digits (the "grid"), in 128 bits. A
// number with bounds is written as a plain decimal (no exponent) with at most 15 integer and 15
// fraction digits; one without bounds may add an exponent of at most two digits. Acceptance is
// exact on the grid against bounds that are first moved inward to what a JSON reader comparing
// IEEE doubles agrees with (an exclusive bound b becomes the next double past b), so a number the
// automaton ends is valid for a validator that compares in doubles (Python's jsonschema) too.
// Internal to src/constrain.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bitdelta::constrain::detail {

__extension__ typedef __int128 Int128;

inline constexpr int kMaxIntDigits = 15;
inline constexpr int kMaxFracDigits = 15;
inline constexpr int kMaxExpDigits = 2;

// One bound as written in the schema. long double holds every int64, uint64 and double exactly.
struct NumberBound {
  long double value = 0;
  bool exclusive = false;
};

struct NumberSpec {
  bool integer = false;
  bool bounded = false;                   // bounds apply: plain decimals only, every prefix checked
  int frac_digits = kMaxFracDigits;       // 0 for integers
  Int128 lo = 0, hi = 0;                  // allowed values, inclusive, in grid units
  std::vector<NumberBound> lower, upper;  // as written, for enum values (number_value_fits)
};

// Fills `spec` for the given bounds. False when no value on the grid satisfies them (contradictory
// bounds, or bounds beyond the supported magnitude |x| < 1e15).
bool make_number_spec(bool integer, std::vector<NumberBound> lower, std::vector<NumberBound> upper,
                      NumberSpec& spec);

// Whether a JSON number (exact value; `is_integer_literal` for a number written without fraction
// or exponent) satisfies the type and bounds, compared the way JSON Schema defines it.
bool number_value_fits(const NumberSpec& spec, long double value, bool is_integer_literal);

// Where a number is in its text.
enum NumberPhase : uint8_t {
  kNumStart,      // nothing yet
  kNumSign,       // "-"
  kNumInt,        // integer digits
  kNumDot,        // "."
  kNumFrac,       // fraction digits
  kNumExp,        // "e"
  kNumExpSign,    // "e+" or "e-"
  kNumExpDigits,  // exponent digits
};

struct NumberState {
  uint8_t phase = kNumStart;
  bool negative = false;
  bool leading_zero = false;  // the integer part is "0"
  uint8_t int_digits = 0, frac_digits = 0, exp_digits = 0;
  uint64_t int_value = 0, frac_value = 0;  // only kept with bounds (0 otherwise: fewer states)
};

// Advances `state` by byte `c`; false (state untouched) when `c` cannot come next.
bool number_step(const NumberSpec& spec, NumberState& state, uint8_t c);
// The text so far is a whole number in range.
bool number_can_end(const NumberSpec& spec, const NumberState& state);
// Some byte can still extend the text.
bool number_can_continue(const NumberSpec& spec, const NumberState& state);

// Decimal text of a grid value, for messages ("-12.5").
std::string grid_to_string(Int128 value, int frac_digits);

}  // namespace bitdelta::constrain::detail
