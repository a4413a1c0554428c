// Brent's method for a bounded scalar maximum (golden-section steps, parabolic interpolation
// where it is safe): the search the domain objectives run over the scale multiplier.
#pragma once

#include <functional>
#include <vector>

namespace bitdelta {

struct BrentResult {
  double x = 0, value = 0;  // the best point evaluated and its value
  int evaluations = 0;
  std::vector<std::pair<double, double>> trace;  // every (x, f(x)) in evaluation order
};

// Maximizes f over [lo, hi] (lo < hi) until the bracket is narrower than about 2·tol around the
// best point or `max_evaluations` have been spent. f is assumed unimodal there; otherwise the
// result is a local maximum, and always the best point evaluated. f may throw; it propagates.
BrentResult brent_maximize(const std::function<double(double)>& f, double lo, double hi, double tol,
                           int max_evaluations);

}  // namespace bitdelta
