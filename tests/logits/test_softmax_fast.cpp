// math/softmax_fast.hpp (the base-2 online softmax of the GPU kernels) on the host, where
// exp2_fast is the C library's exp2: statistics equal math/softmax.hpp's row_softmax to rounding
// whatever the chunking and merge order, the rescale on a raised maximum, the probability offset,
// the gradient from p, and the usability test that sends non-finite or out-of-range rows to the
// exact path.
#include "logits_reference.hpp"

#include <rlcore/math/exp2_fast.hpp>
#include <rlcore/math/softmax.hpp>
#include <rlcore/math/softmax_fast.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace m = rlcore::math;
using rlcore::index_t;

namespace {

/// Fast statistics of x[begin, end) in chunks of `chunk` logits (raise, then observe each).
template <class T>
m::softmax_fast_state<T> fast_stats(const std::vector<T>& x, std::size_t begin, std::size_t end,
                                    std::size_t chunk, T k) {
  m::softmax_fast_state<T> s;
  for (std::size_t c = begin; c < end; c += chunk) {
    const std::size_t stop = std::min(end, c + chunk);
    T chunk_max = x[c];
    for (std::size_t j = c; j < stop; ++j) {
      chunk_max = m::max_fast(chunk_max, x[j]);
    }
    m::softmax_fast_raise(s, chunk_max, k);
    for (std::size_t j = c; j < stop; ++j) {
      m::softmax_fast_observe(s, x[j], k);
    }
  }
  return s;
}

} // namespace

TEST_CASE("exp2_fast and max_fast on the host") {
  CHECK(m::exp2_fast(3.0F) == 8.0F);
  CHECK(m::exp2_fast(-1.0) == 0.5);
  CHECK(m::exp2_fast(-std::numeric_limits<float>::infinity()) == 0.0F);
  CHECK(std::isnan(m::exp2_fast(std::numeric_limits<float>::quiet_NaN())));
  CHECK(m::max_fast(1.0F, std::numeric_limits<float>::quiet_NaN()) == 1.0F);
  CHECK(m::max_fast(-2.0, 3.0) == 3.0);
  CHECK(m::log2_e<double>() * m::ln_2<double>() == doctest::Approx(1.0).epsilon(1e-15));
}

TEST_CASE_TEMPLATE("softmax_fast: statistics equal row_softmax's for any chunking and merge order",
                   T, float, double) {
  const double tol = sizeof(T) == 4 ? 2e-6 : 1e-13;
  for (const double tau : {1.0, 0.7, 3.0}) {
    const auto a = logits_ref::random_logits(1000, 4.0, 31);
    std::vector<T> x(a.begin(), a.end());
    x[500] = T(25); // a late maximum: the earlier chunks are rescaled
    const T inv = T(1.0 / tau);
    const T k = m::log2_e<T>() * inv;
    const auto exact = m::row_softmax<T>(logits_ref::vector_row<T>{&x}, 1000, inv).stats;
    for (const std::size_t chunk : {std::size_t{1}, std::size_t{8}, std::size_t{32}}) {
      INFO("tau ", tau, " chunk ", chunk);
      // Whole row, and three tiles merged in two orders.
      const auto whole = fast_stats(x, 0, 1000, chunk, k);
      const auto t0 = fast_stats(x, 0, 333, chunk, k);
      const auto t1 = fast_stats(x, 333, 600, chunk, k);
      const auto t2 = fast_stats(x, 600, 1000, chunk, k);
      const auto left = m::softmax_fast_merge(m::softmax_fast_merge(t0, t1), t2);
      const auto right = m::softmax_fast_merge(t0, m::softmax_fast_merge(t2, t1));
      for (const auto& s : {whole, left, right}) {
        CHECK(m::softmax_fast_usable(s));
        const auto natural = m::softmax_fast_finish(s);
        CHECK(natural.max == exact.max);
        CHECK(double(natural.sum) == doctest::Approx(double(exact.sum)).epsilon(tol));
        CHECK(double(natural.weighted) == doctest::Approx(double(exact.weighted)).epsilon(tol));
        CHECK(double(m::softmax_entropy(natural))
              == doctest::Approx(double(m::softmax_entropy(exact))).epsilon(tol));
        // p_j from the base-2 offset equals exp(log_softmax_at).
        const T offset = m::softmax_fast_prob_offset(s);
        for (const std::size_t j : {std::size_t{0}, std::size_t{500}, std::size_t{999}}) {
          const double p = std::exp(double(m::log_softmax_at(exact, x[j], inv)));
          CHECK(double(m::softmax_fast_prob(x[j], k, offset)) == doctest::Approx(p).epsilon(tol));
        }
      }
    }
  }
}

TEST_CASE("softmax_fast: hand-derived statistics and gradient from p") {
  // z = (0, ln 3) at tau = 1: p = (1/4, 3/4); S (relative to the max) = 1/3 + 1 = 4/3;
  // W2 = 2^(-log2 3) (-log2 3) = -(log2 3) / 3.
  const double k = m::log2_e<double>();
  m::softmax_fast_state<double> s;
  m::softmax_fast_raise(s, 0.0, k);
  m::softmax_fast_observe(s, 0.0, k);
  m::softmax_fast_raise(s, std::log(3.0), k); // rescale: S 1 -> 1/3, W2 0 -> -(log2 3) / 3
  m::softmax_fast_observe(s, std::log(3.0), k);
  CHECK(s.sum == doctest::Approx(4.0 / 3.0));
  CHECK(s.weighted == doctest::Approx(-std::log2(3.0) / 3.0));
  const double offset = m::softmax_fast_prob_offset(s);
  CHECK(m::softmax_fast_prob(0.0, k, offset) == doctest::Approx(0.25));
  CHECK(m::softmax_fast_prob(std::log(3.0), k, offset) == doctest::Approx(0.75));
  // H = -(1/4 ln 1/4 + 3/4 ln 3/4).
  CHECK(m::softmax_entropy(m::softmax_fast_finish(s))
        == doctest::Approx(-(0.25 * std::log(0.25) + 0.75 * std::log(0.75))));
  // d (g lp_1) / dz_j = g (1[j == 1] - p_j) / tau, tau = 0.5, g = 2.
  CHECK(m::log_prob_logit_grad(0.25, false, 2.0, 2.0) == doctest::Approx(-1.0));
  CHECK(m::log_prob_logit_grad(0.75, true, 2.0, 2.0) == doctest::Approx(1.0));
}

TEST_CASE("softmax_fast: NaN, inf and out-of-range logits make the statistics unusable") {
  const float inf = std::numeric_limits<float>::infinity();
  const float k = m::log2_e<float>();
  const auto usable = [&](std::vector<float> x) {
    return m::softmax_fast_usable(fast_stats(x, 0, x.size(), 2, k));
  };
  CHECK(usable({1.0F, 2.0F, -3.0F}));
  CHECK(usable({-1e30F, 2.0F, 5.0F})); // exp underflows to 0: exact, usable
  CHECK_FALSE(usable({1.0F, std::numeric_limits<float>::quiet_NaN(), 3.0F}));
  CHECK_FALSE(usable({std::numeric_limits<float>::quiet_NaN(), 1.0F}));
  CHECK_FALSE(usable({1.0F, inf, 3.0F}));
  CHECK_FALSE(usable({1.0F, -inf, 3.0F}));
  CHECK_FALSE(usable({3.0e38F, 1.0F}));  // z k overflows
  CHECK_FALSE(usable({1.0F, -3.0e38F})); // z k - m k overflows
  // A part that met an overflowing or infinite logit can have sum == 0: a merge must not drop it
  // as empty (the device found this: a 2.5e38 bf16 logit was merged away).
  const std::vector<float> huge{0.0F, 2.5e38F};
  const auto h = fast_stats(huge, 0, 2, 1, k);
  CHECK_FALSE(m::softmax_fast_usable(h));
  CHECK_FALSE(m::softmax_fast_empty(h));
  const std::vector<float> zeros{0.0F, 0.0F};
  CHECK_FALSE(m::softmax_fast_usable(m::softmax_fast_merge(fast_stats(zeros, 0, 2, 2, k), h)));
  CHECK_FALSE(m::softmax_fast_usable(m::softmax_fast_merge(h, fast_stats(zeros, 0, 2, 2, k))));
  const std::vector<float> minus_inf{-inf};
  CHECK_FALSE(m::softmax_fast_empty(fast_stats(minus_inf, 0, 1, 1, k)));
  CHECK(m::softmax_fast_empty(m::softmax_fast_state<float>{}));
  // A merge with an unusable part is unusable.
  const std::vector<float> bad{1.0F, -inf};
  const std::vector<float> good{1.0F, 2.0F};
  CHECK_FALSE(m::softmax_fast_usable(
      m::softmax_fast_merge(fast_stats(good, 0, 2, 2, k), fast_stats(bad, 0, 2, 2, k))));
}
