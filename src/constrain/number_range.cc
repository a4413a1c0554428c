#include "constrain/number_range.h"

#include <algorithm>
#include <cmath>

namespace bitdelta::constrain::detail {
namespace {

__extension__ typedef unsigned __int128 UInt128;

Int128 pow10(int k) {
  Int128 p = 1;
  for (int i = 0; i < k; ++i) p *= 10;
  return p;
}

// Largest magnitude on the grid: 15 integer digits.
Int128 max_magnitude(int frac_digits) { return pow10(kMaxIntDigits + frac_digits) - 1; }

// `value` * 10^frac_digits rounded up (or down), exactly; clamped to one past max_magnitude.
Int128 to_grid(long double value, int frac_digits, bool round_up) {
  const Int128 limit = max_magnitude(frac_digits) + 1;
  if (value > 1e16L) return limit;
  if (value < -1e16L) return -limit;
  if (value == 0) return 0;
  const long double magnitude = std::fabs(value);
  int exponent = 0;
  const long double fraction = std::frexp(magnitude, &exponent);  // magnitude = fraction * 2^e
  const UInt128 mantissa = UInt128(std::ldexp(fraction, 64));     // exact: 64-bit significand
  const int shift = 64 - exponent;  // magnitude = mantissa / 2^shift, shift >= 10 here
  const UInt128 scaled = mantissa * UInt128(pow10(frac_digits));  // < 2^114
  UInt128 quotient = 0;
  bool remainder = scaled != 0;
  if (shift < 128) {
    quotient = scaled >> shift;
    remainder = (scaled & ((UInt128(1) << shift) - 1)) != 0;
  }
  const Int128 q = Int128(quotient);
  if (value > 0) return round_up && remainder ? q + 1 : q;
  return !round_up && remainder ? -(q + 1) : -q;
}

// The bound moved to the next double strictly past it (upward or downward), as a long double.
long double next_double(long double value, bool upward) {
  const double inf = upward ? HUGE_VAL : -HUGE_VAL;
  double d = std::nextafter(double(value), inf);
  while (upward ? (long double)d <= value : (long double)d >= value) d = std::nextafter(d, inf);
  return d;
}

bool intersects(const NumberSpec& spec, Int128 low_magnitude, Int128 high_magnitude,
                bool negative) {
  const Int128 low = negative ? -high_magnitude : low_magnitude;
  const Int128 high = negative ? -low_magnitude : high_magnitude;
  return low <= spec.hi && high >= spec.lo;
}

Int128 magnitude(const NumberSpec& spec, const NumberState& s) {
  Int128 m = Int128(s.int_value) * pow10(spec.frac_digits);
  if (s.frac_digits > 0) m += Int128(s.frac_value) * pow10(spec.frac_digits - s.frac_digits);
  return m;
}

// Some completion of the text so far lies within [lo, hi].
bool live(const NumberSpec& spec, const NumberState& s) {
  if (!spec.bounded) return true;
  const int f = spec.frac_digits;
  const Int128 grid = pow10(f);
  const Int128 top = max_magnitude(f);
  switch (s.phase) {
    case kNumStart:
      return intersects(spec, 0, top, false) || intersects(spec, 0, top, true);
    case kNumSign:
      return intersects(spec, 0, top, true);
    case kNumInt: {
      // k more integer digits (then any fraction): [A·10^k, (A+1)·10^k) on the grid.
      const int more = s.leading_zero ? 0 : kMaxIntDigits - s.int_digits;
      Int128 scale = grid;
      for (int k = 0; k <= more; ++k, scale *= 10) {
        const Int128 low = Int128(s.int_value) * scale;
        if (intersects(spec, low, low + scale - 1, s.negative)) return true;
      }
      return false;
    }
    case kNumDot: {
      const Int128 low = Int128(s.int_value) * grid;
      return intersects(spec, low, low + grid - 1, s.negative);
    }
    case kNumFrac: {
      const Int128 low = magnitude(spec, s);
      return intersects(spec, low, low + pow10(f - s.frac_digits) - 1, s.negative);
    }
    default:
      return true;  // exponents only occur without bounds
  }
}

}  // namespace

bool make_number_spec(bool integer, std::vector<NumberBound> lower, std::vector<NumberBound> upper,
                      NumberSpec& spec) {
  spec = NumberSpec{};
  spec.integer = integer;
  spec.frac_digits = integer ? 0 : kMaxFracDigits;
  spec.bounded = !lower.empty() || !upper.empty();
  const int f = spec.frac_digits;
  spec.hi = max_magnitude(f);
  spec.lo = -spec.hi;
  // An integer instance is compared exactly; a decimal one as the nearest double, so for numbers
  // an exclusive bound first moves to the next double past it.
  for (const NumberBound& b : lower) {
    Int128 v;
    if (integer) {
      v = b.exclusive ? to_grid(b.value, 0, false) + 1 : to_grid(b.value, 0, true);
    } else {
      v = to_grid(b.exclusive ? next_double(b.value, true) : b.value, f, true);
    }
    spec.lo = std::max(spec.lo, v);
  }
  for (const NumberBound& b : upper) {
    Int128 v;
    if (integer) {
      v = b.exclusive ? to_grid(b.value, 0, true) - 1 : to_grid(b.value, 0, false);
    } else {
      v = to_grid(b.exclusive ? next_double(b.value, false) : b.value, f, false);
    }
    spec.hi = std::min(spec.hi, v);
  }
  spec.lower = std::move(lower);
  spec.upper = std::move(upper);
  return spec.lo <= spec.hi;
}

bool number_value_fits(const NumberSpec& spec, long double value, bool is_integer_literal) {
  if (spec.integer && !is_integer_literal && value != std::floor(value)) return false;
  for (const NumberBound& b : spec.lower) {
    if (b.exclusive ? !(value > b.value) : !(value >= b.value)) return false;
  }
  for (const NumberBound& b : spec.upper) {
    if (b.exclusive ? !(value < b.value) : !(value <= b.value)) return false;
  }
  return true;
}

bool number_step(const NumberSpec& spec, NumberState& state, uint8_t c) {
  NumberState t = state;
  const bool digit = c >= '0' && c <= '9';
  const unsigned d = c - '0';
  const bool exponent_mark = c == 'e' || c == 'E';
  switch (t.phase) {
    case kNumStart:
      if (c == '-') {
        t.negative = true;
        t.phase = kNumSign;
        break;
      }
      [[fallthrough]];
    case kNumSign:
      if (!digit) return false;
      t.phase = kNumInt;
      t.int_digits = 1;
      t.int_value = d;
      t.leading_zero = d == 0;
      break;
    case kNumInt:
      if (digit) {
        if (t.leading_zero || t.int_digits >= kMaxIntDigits) return false;
        t.int_value = t.int_value * 10 + d;
        ++t.int_digits;
      } else if (c == '.') {
        if (spec.frac_digits == 0) return false;
        t.phase = kNumDot;
      } else if (exponent_mark) {
        if (spec.integer || spec.bounded) return false;
        t.phase = kNumExp;
      } else {
        return false;
      }
      break;
    case kNumDot:
    case kNumFrac:
      if (digit) {
        if (t.frac_digits >= spec.frac_digits) return false;
        t.frac_value = t.frac_value * 10 + d;
        ++t.frac_digits;
        t.phase = kNumFrac;
      } else if (exponent_mark && t.phase == kNumFrac && !spec.bounded) {
        t.phase = kNumExp;
      } else {
        return false;
      }
      break;
    case kNumExp:
      if (c == '+' || c == '-') {
        t.phase = kNumExpSign;
        break;
      }
      [[fallthrough]];
    case kNumExpSign:
      if (!digit) return false;
      t.phase = kNumExpDigits;
      t.exp_digits = 1;
      break;
    case kNumExpDigits:
      if (!digit || t.exp_digits >= kMaxExpDigits) return false;
      ++t.exp_digits;
      break;
    default:
      return false;
  }
  if (!live(spec, t)) return false;
  if (!spec.bounded) t.int_value = t.frac_value = 0;
  state = t;
  return true;
}

bool number_can_end(const NumberSpec& spec, const NumberState& s) {
  if (s.phase != kNumInt && s.phase != kNumFrac && s.phase != kNumExpDigits) return false;
  if (!spec.bounded) return true;
  const Int128 m = magnitude(spec, s);
  const Int128 v = s.negative ? -m : m;
  return v >= spec.lo && v <= spec.hi;
}

bool number_can_continue(const NumberSpec& spec, const NumberState& s) {
  static constexpr char kBytes[] = "0123456789.eE+-";
  for (const char* p = kBytes; *p; ++p) {
    NumberState t = s;
    if (number_step(spec, t, uint8_t(*p))) return true;
  }
  return false;
}

std::string grid_to_string(Int128 value, int frac_digits) {
  const bool negative = value < 0;
  UInt128 m = negative ? UInt128(-value) : UInt128(value);
  std::string digits;
  do {
    digits.push_back(char('0' + int(m % 10)));
    m /= 10;
  } while (m != 0);
  while (int(digits.size()) <= frac_digits) digits.push_back('0');
  std::reverse(digits.begin(), digits.end());
  if (frac_digits > 0) {
    digits.insert(digits.end() - frac_digits, '.');
    while (digits.back() == '0') digits.pop_back();
    if (digits.back() == '.') digits.pop_back();
  }
  return negative ? "-" + digits : digits;
}

}  // namespace bitdelta::constrain::detail
