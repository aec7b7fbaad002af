// Independent references for the logits tests: naive two-pass softmax in long double, written
// from the definitions (not from rlcore's formulas), and a central finite-difference helper.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace logits_ref {

using real = long double;

/// Row accessor over a std::vector: row(j) = values[j] (the `row` argument of math/softmax*.hpp).
template <class T>
struct vector_row {
  const std::vector<T>* values;
  T operator()(std::int64_t j) const { return (*values)[static_cast<std::size_t>(j)]; }
};

/// log softmax(row / tau): max pass, then log of the sum of exp(x - max).
inline std::vector<real> log_softmax(const std::vector<real>& row, real tau) {
  real m = row[0] / tau;
  for (real z : row) {
    m = std::max(m, z / tau);
  }
  real sum = 0;
  for (real z : row) {
    sum += std::exp(z / tau - m);
  }
  const real lse = m + std::log(sum);
  std::vector<real> out;
  for (real z : row) {
    out.push_back(z / tau - lse);
  }
  return out;
}

inline real entropy(const std::vector<real>& row, real tau) {
  real h = 0;
  for (real lp : log_softmax(row, tau)) {
    h -= std::exp(lp) * lp;
  }
  return h;
}

inline real kl(const std::vector<real>& row, const std::vector<real>& ref, real tau) {
  const auto lp = log_softmax(row, tau);
  const auto lq = log_softmax(ref, tau);
  real out = 0;
  for (std::size_t v = 0; v < row.size(); ++v) {
    out += std::exp(lp[v]) * (lp[v] - lq[v]);
  }
  return out;
}

/// Central finite difference of f at x along coordinate j (step h).
inline double central_difference(const std::function<double(const std::vector<double>&)>& f,
                                 std::vector<double> x, std::size_t j, double h = 1e-6) {
  const double x0 = x[j];
  x[j] = x0 + h;
  const double up = f(x);
  x[j] = x0 - h;
  const double down = f(x);
  return (up - down) / (2 * h);
}

/// Deterministic pseudo-random logits in [-scale, scale] (a small LCG, no <random> distribution
/// differences between standard libraries).
inline std::vector<double> random_logits(std::size_t n, double scale, unsigned seed) {
  std::vector<double> out(n);
  unsigned long long s = 0x9E3779B97F4A7C15ULL ^ seed;
  for (auto& v : out) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    v = scale * (2.0 * static_cast<double>(s >> 11) / 9007199254740992.0 - 1.0);
  }
  return out;
}

} // namespace logits_ref
