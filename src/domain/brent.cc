#include "domain/brent.h"

#include <cmath>

#include "util/error.h"

namespace bitdelta {

BrentResult brent_maximize(const std::function<double(double)>& f, double lo, double hi, double tol,
                           int max_evaluations) {
  if (!(lo < hi)) fail("the search bounds must satisfy lo < hi, got [{}, {}]", lo, hi);
  if (max_evaluations < 1) fail("the search needs at least one evaluation");
  BrentResult r;
  // Minimizes g = −f (the textbook form; Brent 1973, ch. 5).
  auto g = [&](double x) {
    const double v = f(x);
    ++r.evaluations;
    r.trace.emplace_back(x, v);
    return -v;
  };
  const double golden = 0.5 * (3.0 - std::sqrt(5.0));
  double a = lo, b = hi;
  double x = a + golden * (b - a), w = x, v = x;
  double fx = g(x), fw = fx, fv = fx;
  double d = 0, e = 0;
  while (r.evaluations < max_evaluations) {
    const double m = 0.5 * (a + b);
    const double tol1 = tol + 1e-10 * std::abs(x), tol2 = 2 * tol1;
    if (std::abs(x - m) <= tol2 - 0.5 * (b - a)) break;
    bool parabolic = false;
    if (std::abs(e) > tol1) {
      double p = (x - v) * (x - v) * (fx - fw) - (x - w) * (x - w) * (fx - fv);
      double q = 2 * ((x - v) * (fx - fw) - (x - w) * (fx - fv));
      if (q > 0) p = -p;
      q = std::abs(q);
      if (std::abs(p) < std::abs(0.5 * q * e) && p > q * (a - x) && p < q * (b - x)) {
        e = d;
        d = p / q;
        const double u = x + d;
        if (u - a < tol2 || b - u < tol2) d = x < m ? tol1 : -tol1;
        parabolic = true;
      }
    }
    if (!parabolic) {
      e = (x < m ? b : a) - x;
      d = golden * e;
    }
    const double u = std::abs(d) >= tol1 ? x + d : x + (d > 0 ? tol1 : -tol1);
    const double fu = g(u);
    if (fu <= fx) {
      (u < x ? b : a) = x;
      v = w, fv = fw;
      w = x, fw = fx;
      x = u, fx = fu;
    } else {
      (u < x ? a : b) = u;
      if (fu <= fw || w == x) {
        v = w, fv = fw;
        w = u, fw = fu;
      } else if (fu <= fv || v == x || v == w) {
        v = u, fv = fu;
      }
    }
  }
  r.x = x;
  r.value = -fx;
  return r;
}

}  // namespace bitdelta
