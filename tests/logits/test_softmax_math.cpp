// math/softmax.hpp: row statistics, online tile merging, entropy and the element gradients.
#include "logits_reference.hpp"

#include <rlcore/math/softmax.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace m = rlcore::math;
using rlcore::index_t;

namespace {

template <class T>
m::row_softmax_result<T> stats_of(const std::vector<T>& row, T inv_temperature = T(1)) {
  return m::row_softmax<T>(logits_ref::vector_row<T>{&row}, static_cast<index_t>(row.size()),
                           inv_temperature);
}

} // namespace

TEST_CASE_TEMPLATE("row_softmax: hand-derived log-probs and entropy", T, float, double) {
  // z = (0, ln 2, ln 3): exp(z) = (1, 2, 3), sum 6, p = (1/6, 1/3, 1/2).
  // log p_2 = ln 3 - ln 6 = -ln 2; H = (1/6) ln 6 + (1/3) ln 3 + (1/2) ln 2.
  const std::vector<T> row{T(0), T(std::log(2.0)), T(std::log(3.0))};
  const auto r = stats_of(row);
  CHECK(r.finite);
  CHECK(r.stats.max == row[2]);
  CHECK(r.stats.sum == doctest::Approx(2.0).epsilon(1e-6)); // (1 + 2 + 3) / 3
  CHECK(m::log_softmax_at(r.stats, row[2], T(1)) == doctest::Approx(-std::log(2.0)).epsilon(1e-6));
  CHECK(m::log_softmax_at(r.stats, row[0], T(1)) == doctest::Approx(-std::log(6.0)).epsilon(1e-6));
  const double h = std::log(6.0) / 6 + std::log(3.0) / 3 + std::log(2.0) / 2;
  CHECK(m::softmax_entropy(r.stats) == doctest::Approx(h).epsilon(1e-6));
}

TEST_CASE_TEMPLATE("row_softmax: uniform rows give -ln V and ln V; V = 1 gives 0", T, float,
                   double) {
  for (int v : {1, 2, 3, 7, 100}) {
    const std::vector<T> row(static_cast<std::size_t>(v), T(4.25));
    const auto r = stats_of(row);
    CHECK(m::log_softmax_at(r.stats, row[0], T(1))
          == doctest::Approx(-std::log(double(v))).epsilon(1e-6));
    CHECK(m::softmax_entropy(r.stats) == doctest::Approx(std::log(double(v))).epsilon(1e-6));
  }
  const std::vector<T> one{T(-7)};
  const auto r = stats_of(one);
  CHECK(m::log_softmax_at(r.stats, one[0], T(1)) == T(0));
  CHECK(m::softmax_entropy(r.stats) == T(0));
}

TEST_CASE("row_softmax: temperature divides the logits first") {
  // z / tau with tau = 0.5: (0, 2 ln 2) -> exp = (1, 4), p = (1/5, 4/5).
  const std::vector<double> row{0.0, std::log(2.0)};
  const auto r = stats_of(row, 2.0);
  CHECK(m::log_softmax_at(r.stats, row[1], 2.0) == doctest::Approx(std::log(0.8)));
  CHECK(m::softmax_entropy(r.stats)
        == doctest::Approx(-(0.2 * std::log(0.2) + 0.8 * std::log(0.8))));
}

TEST_CASE_TEMPLATE("online observe and tile merging equal the two-pass statistics", T, float,
                   double) {
  for (int vocab : {1, 2, 3, 7, 33, 1001}) {
    const auto values = logits_ref::random_logits(static_cast<std::size_t>(vocab), 30.0,
                                                  static_cast<unsigned>(vocab));
    const std::vector<T> row(values.begin(), values.end());
    for (T inv_t : {T(1), T(1.0 / 0.7)}) {
      const auto two_pass = stats_of(row, inv_t);
      const double lse = std::log(double(two_pass.stats.sum));
      const double h = double(m::softmax_entropy(two_pass.stats));
      for (int tile : {1, 3, 4, 32, 256}) {
        // Each tile folds its share online; tiles merge left to right, and also pairwise
        // (tree order) to exercise associativity.
        std::vector<m::softmax_partial<T>> tiles;
        for (int begin = 0; begin < vocab; begin += tile) {
          m::softmax_partial<T> p;
          for (int j = begin; j < std::min(vocab, begin + tile); ++j) {
            m::softmax_observe(p, row[static_cast<std::size_t>(j)], inv_t);
          }
          tiles.push_back(p);
        }
        m::softmax_partial<T> sequential;
        for (const auto& p : tiles) {
          sequential = m::softmax_merge(sequential, p, inv_t);
        }
        while (tiles.size() > 1) {
          std::vector<m::softmax_partial<T>> next;
          for (std::size_t k = 0; k < tiles.size(); k += 2) {
            next.push_back(k + 1 < tiles.size() ? m::softmax_merge(tiles[k], tiles[k + 1], inv_t)
                                                : tiles[k]);
          }
          tiles = next;
        }
        for (const auto& merged : {sequential, tiles[0]}) {
          CHECK(merged.max == two_pass.stats.max);
          const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
          CHECK(std::log(double(merged.sum)) == doctest::Approx(lse).epsilon(tol).scale(1));
          CHECK(double(m::softmax_entropy(merged)) == doctest::Approx(h).epsilon(tol).scale(1));
        }
      }
    }
  }
}

TEST_CASE_TEMPLATE("an empty partial is the identity of the merge", T, float, double) {
  m::softmax_partial<T> p;
  m::softmax_observe(p, T(2), T(1));
  m::softmax_observe(p, T(-1), T(1));
  const m::softmax_partial<T> empty;
  for (const auto& merged : {m::softmax_merge(p, empty, T(1)), m::softmax_merge(empty, p, T(1))}) {
    CHECK(merged.max == p.max);
    CHECK(merged.sum == p.sum);
    CHECK(merged.weighted == p.weighted);
  }
}

TEST_CASE("logits near the float maximum stay finite (no overflow in z - max)") {
  const float big = 3.0e38F;
  const std::vector<float> row{big, -big, 0.0F, big};
  for (float inv_t : {1.0F, 2.0F, 1.0e-3F}) {
    const auto r = stats_of(row, inv_t);
    CHECK(r.finite);
    CHECK(r.stats.sum == doctest::Approx(2.0)); // the two maxima; the rest underflow to 0
    const float h = m::softmax_entropy(r.stats);
    CHECK(h == doctest::Approx(std::log(2.0)));
    for (float z : row) {
      const float lp = m::log_softmax_at(r.stats, z, inv_t);
      CHECK(std::isfinite(lp));
      for (bool target : {false, true}) {
        CHECK(std::isfinite(m::token_log_prob_logit_grad(lp, target, 1.0F, 1.0F, h, inv_t)));
      }
      // KL of this row against a reversed one: every term finite.
      CHECK(std::isfinite(m::kl_term(lp, -big)));
      CHECK(std::isfinite(m::full_kl_logit_grad(lp, -big, big, 1.0F, inv_t)));
    }
    // Online tiles agree at these magnitudes too.
    m::softmax_partial<float> a;
    m::softmax_partial<float> b;
    m::softmax_observe(a, row[0], inv_t);
    m::softmax_observe(a, row[1], inv_t);
    m::softmax_observe(b, row[2], inv_t);
    m::softmax_observe(b, row[3], inv_t);
    const auto merged = m::softmax_merge(b, a, inv_t);
    CHECK(merged.sum == doctest::Approx(2.0));
    CHECK(m::softmax_entropy(merged) == doctest::Approx(std::log(2.0)));
  }
}

TEST_CASE("non-finite logits are reported; -inf has probability 0") {
  const double inf = std::numeric_limits<double>::infinity();
  CHECK_FALSE(stats_of(std::vector<double>{0.0, std::nan("")}).finite);
  CHECK_FALSE(stats_of(std::vector<double>{0.0, inf}).finite);
  const auto r = stats_of(std::vector<double>{0.0, -inf, 0.0});
  CHECK_FALSE(r.finite);
  CHECK(r.stats.sum == 2.0); // -inf contributes exp(-inf) = 0, no NaN
  CHECK(m::softmax_entropy(r.stats) == doctest::Approx(std::log(2.0)));
}

TEST_CASE("element gradients: hand-derived values") {
  // p = (1/4, 3/4) (z = (0, ln 3)), target 1, g_lp = 2, g_H = 0.5, tau = 1:
  //   d lp/dz_0 = -1/4, d lp/dz_1 = 1/4.
  //   H = -(1/4 ln 1/4 + 3/4 ln 3/4); dH/dz_0 = -1/4 (ln 1/4 + H), dH/dz_1 = -3/4 (ln 3/4 + H).
  const double h = -(0.25 * std::log(0.25) + 0.75 * std::log(0.75));
  const double g0 = m::token_log_prob_logit_grad(std::log(0.25), false, 2.0, 0.5, h, 1.0);
  const double g1 = m::token_log_prob_logit_grad(std::log(0.75), true, 2.0, 0.5, h, 1.0);
  CHECK(g0 == doctest::Approx(2.0 * -0.25 + 0.5 * -0.25 * (std::log(0.25) + h)));
  CHECK(g1 == doctest::Approx(2.0 * 0.25 + 0.5 * -0.75 * (std::log(0.75) + h)));
  CHECK(g0 + g1 == doctest::Approx(0.0).scale(1)); // softmax gradients sum to 0 over the row
  // Temperature 2 halves the gradient.
  CHECK(m::token_log_prob_logit_grad(std::log(0.25), false, 2.0, 0.5, h, 0.5)
        == doctest::Approx(g0 / 2));
  // KL term: p = 1/2, q = 1/4: (1/2) ln 2; zero probability terms are exactly 0 even against
  // log q = -inf.
  CHECK(m::kl_term(std::log(0.5), std::log(0.25)) == doctest::Approx(0.5 * std::log(2.0)));
  CHECK(
      m::kl_term(-std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity())
      == 0.0);
}
