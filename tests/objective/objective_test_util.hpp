// Shared helpers of the objective tests: error-message checks, random inputs, central finite
// differences.
#pragma once

#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace rlcore_test {

// Runs f, expects rlcore::invalid_argument naming `argument` with `fragment` in its message.
template <class F>
void check_invalid(F&& f, const std::string& argument, const std::string& fragment) {
  try {
    f();
    FAIL("expected rlcore::invalid_argument for ", argument);
  } catch (const rlcore::invalid_argument& e) {
    CHECK(e.argument() == argument);
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find(fragment) != std::string::npos);
    CHECK(what.find("'" + argument + "'") != std::string::npos);
  }
}

inline std::vector<double> uniform(std::size_t n, double lo, double hi, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> x(n);
  for (double& v : x) {
    v = dist(rng);
  }
  return x;
}

// Central finite difference of loss(x) w.r.t. every x[k] (step h), compared with `gradient` to
// absolute tolerance tol (relative to max(1, |g|)).
inline void check_gradient(const std::function<double(const std::vector<double>&)>& loss,
                           std::vector<double> x, const std::vector<double>& gradient,
                           double h = 1e-6, double tol = 1e-7) {
  REQUIRE(gradient.size() == x.size());
  for (std::size_t k = 0; k < x.size(); ++k) {
    const double saved = x[k];
    x[k] = saved + h;
    const double up = loss(x);
    x[k] = saved - h;
    const double down = loss(x);
    x[k] = saved;
    const double numeric = (up - down) / (2 * h);
    INFO("component ", k, ": analytic ", gradient[k], " numeric ", numeric);
    CHECK(std::abs(numeric - gradient[k]) <= tol * std::max(1.0, std::abs(gradient[k])));
  }
}

inline bool all_finite(const std::vector<double>& x) {
  for (double v : x) {
    if (!std::isfinite(v)) {
      return false;
    }
  }
  return true;
}

} // namespace rlcore_test
