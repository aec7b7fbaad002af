// full_kl_from_logits and its backward: hand-derived values, the naive reference, properties,
// finite differences in double, temperature, huge logits.
#include "logits_reference.hpp"

#include <rlcore/objective/logits.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

using rlcore::index_t;

TEST_CASE("full_kl_from_logits: hand-derived value") {
  // p = (1/2, 1/2) (z = (0, 0)), q = (1/4, 3/4) (z_ref = (0, ln 3)):
  // KL = 1/2 ln(2) + 1/2 ln(2/3) = ln 2 - 1/2 ln 3.
  const std::vector<double> logits{0.0, 0.0};
  const std::vector<double> ref{0.0, std::log(3.0)};
  std::vector<double> kl(1);
  rlcore::full_kl_from_logits(rlcore::make_matrix_view(logits.data(), 1, 2),
                              rlcore::make_matrix_view(ref.data(), 1, 2), kl);
  CHECK(kl[0] == doctest::Approx(std::log(2.0) - 0.5 * std::log(3.0)));
  // Gradient: p_j (log p_j - log q_j - KL): j = 0: 1/2 (ln 2 - KL), j = 1: 1/2 (ln(2/3) - KL).
  std::vector<double> grad(2);
  const std::vector<double> g{1.0};
  rlcore::full_kl_from_logits_backward(rlcore::make_matrix_view(logits.data(), 1, 2),
                                       rlcore::make_matrix_view(ref.data(), 1, 2), g,
                                       rlcore::make_matrix_view(grad.data(), 1, 2));
  CHECK(grad[0] == doctest::Approx(0.5 * (std::log(2.0) - kl[0])));
  CHECK(grad[1] == doctest::Approx(0.5 * (std::log(2.0 / 3.0) - kl[0])));
}

TEST_CASE_TEMPLATE("full_kl_from_logits: reference values, KL(p || p) = 0, shift invariance", T,
                   float, double) {
  for (index_t vocab : {index_t{1}, index_t{3}, index_t{7}, index_t{32001}}) {
    const index_t rows = 2;
    const auto a = logits_ref::random_logits(static_cast<std::size_t>(rows * vocab), 4.0, 21);
    const auto b = logits_ref::random_logits(static_cast<std::size_t>(rows * vocab), 4.0, 22);
    const std::vector<T> z(a.begin(), a.end());
    const std::vector<T> ref(b.begin(), b.end());
    for (double tau : {1.0, 0.5}) {
      INFO("V = ", vocab, ", tau = ", tau);
      rlcore::logits_options options;
      options.temperature = tau;
      std::vector<T> kl(2);
      std::vector<T> self(2);
      const auto zv = rlcore::make_matrix_view(z.data(), rows, vocab);
      rlcore::full_kl_from_logits(zv, rlcore::make_matrix_view(ref.data(), rows, vocab), kl,
                                  options);
      rlcore::full_kl_from_logits(zv, zv, self, options);
      for (index_t r = 0; r < rows; ++r) {
        const std::vector<logits_ref::real> zr(z.begin() + r * vocab, z.begin() + (r + 1) * vocab);
        const std::vector<logits_ref::real> qr(ref.begin() + r * vocab,
                                               ref.begin() + (r + 1) * vocab);
        const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
        const auto ri = static_cast<std::size_t>(r);
        CHECK(double(kl[ri])
              == doctest::Approx(double(logits_ref::kl(zr, qr, tau))).epsilon(tol).scale(1));
        CHECK(kl[ri] >= T(0));
        CHECK(double(self[ri]) == doctest::Approx(0.0).scale(tol));
      }
      // Adding a constant to every reference logit of a row changes nothing.
      std::vector<T> shifted = ref;
      for (auto& v : shifted) {
        v += T(3);
      }
      std::vector<T> kl_shifted(2);
      rlcore::full_kl_from_logits(zv, rlcore::make_matrix_view(shifted.data(), rows, vocab),
                                  kl_shifted, options);
      for (std::size_t r = 0; r < 2; ++r) {
        CHECK(double(kl_shifted[r])
              == doctest::Approx(double(kl[r]))
                     .epsilon(std::is_same_v<T, float> ? 1e-4 : 1e-10)
                     .scale(1e-6));
      }
    }
  }
}

TEST_CASE("full_kl_from_logits_backward matches central finite differences") {
  const index_t rows = 3;
  for (index_t vocab : {index_t{1}, index_t{2}, index_t{6}, index_t{11}}) {
    const auto z = logits_ref::random_logits(static_cast<std::size_t>(rows * vocab), 3.0, 31);
    const auto ref = logits_ref::random_logits(static_cast<std::size_t>(rows * vocab), 3.0, 32);
    const std::vector<double> g{1.0, -0.75, 2.5};
    const auto refv = rlcore::make_matrix_view(ref.data(), rows, vocab);
    for (double tau : {1.0, 0.6, 3.0}) {
      INFO("V = ", vocab, ", tau = ", tau);
      rlcore::logits_options options;
      options.temperature = tau;
      std::vector<double> grad(z.size(), -5.0);
      rlcore::full_kl_from_logits_backward(rlcore::make_matrix_view(z.data(), rows, vocab), refv, g,
                                           rlcore::make_matrix_view(grad.data(), rows, vocab),
                                           options);
      const auto f = [&](const std::vector<double>& x) {
        std::vector<double> kl(3);
        rlcore::full_kl_from_logits(rlcore::make_matrix_view(x.data(), rows, vocab), refv, kl,
                                    options);
        return g[0] * kl[0] + g[1] * kl[1] + g[2] * kl[2];
      };
      for (std::size_t j = 0; j < z.size(); ++j) {
        CHECK(grad[j]
              == doctest::Approx(logits_ref::central_difference(f, z, j)).epsilon(1e-6).scale(1));
      }
      // Accumulate mode adds onto what is there.
      std::vector<double> acc(z.size(), 1.0);
      options.accumulate_gradient = true;
      rlcore::full_kl_from_logits_backward(rlcore::make_matrix_view(z.data(), rows, vocab), refv, g,
                                           rlcore::make_matrix_view(acc.data(), rows, vocab),
                                           options);
      for (std::size_t j = 0; j < z.size(); ++j) {
        CHECK(acc[j] == doctest::Approx(1.0 + grad[j]));
      }
    }
  }
}

TEST_CASE("full_kl_from_logits: huge float logits stay finite") {
  // Policy puts all its mass where the reference logit is -3e38: KL is ~6e38 in exact arithmetic;
  // rlcore clamps it to the float maximum instead of returning inf.
  const float big = 3.0e38F;
  const std::vector<float> z{big, -big, 0.0F};
  const std::vector<float> ref{-big, big, 0.0F};
  std::vector<float> kl(1);
  std::vector<float> grad(3);
  const std::vector<float> g{1.0F};
  const auto zv = rlcore::make_matrix_view(z.data(), 1, 3);
  const auto rv = rlcore::make_matrix_view(ref.data(), 1, 3);
  rlcore::full_kl_from_logits(zv, rv, kl);
  rlcore::full_kl_from_logits_backward(zv, rv, g, rlcore::make_matrix_view(grad.data(), 1, 3));
  CHECK(std::isfinite(kl[0]));
  CHECK(kl[0] >= 1e38F);
  for (float v : grad) {
    CHECK(std::isfinite(v));
  }
}

TEST_CASE("full_kl_from_logits_backward: finite in float for finite extreme inputs (fuzz case)") {
  // Fuzzing found it: float reference logits near the bf16 maximum make log q_j reach -float max
  // (floored), so the bracket log p_j - log q_j - KL is ~1e38 where p_j is not small; g * p_j *
  // bracket / tau then overflowed to +-inf for |g| > 1 or tau < 1. The gradient now saturates at
  // +-float max, keeping the sign of the exact value.
  const float big = 3.3895314e38F;
  // p = softmax(0, 0, 1); q puts all its mass on j = 0, log q_1 and log q_2 are ~ -2 big / tau.
  const std::vector<float> z{0.0F, 0.0F, 1.0F};
  const std::vector<float> ref{big, -big, -big};
  const auto zv = rlcore::make_matrix_view(z.data(), 1, 3);
  const auto rv = rlcore::make_matrix_view(ref.data(), 1, 3);
  for (const double tau : {1.0, 0.25}) {
    for (const float g : {1e4F, -1e4F, 2.0F}) {
      INFO("tau ", tau, " g ", g);
      rlcore::logits_options options;
      options.temperature = tau;
      std::vector<float> kl(1);
      rlcore::full_kl_from_logits(zv, rv, kl, options);
      CHECK(std::isfinite(kl[0]));
      CHECK(kl[0] >= 1e38F);
      const std::vector<float> gv{g};
      std::vector<float> grad(3, 7.0F);
      rlcore::full_kl_from_logits_backward(zv, rv, gv, rlcore::make_matrix_view(grad.data(), 1, 3),
                                           options);
      for (float v : grad) {
        CHECK(std::isfinite(v));
      }
      // Exact signs: j = 0 has log p_0 - log q_0 - KL ~ -KL < 0; j = 2 has ~ +KL / p_... > 0.
      CHECK((grad[0] < 0.0F) == (g > 0.0F));
      CHECK((grad[2] > 0.0F) == (g > 0.0F));
      // Accumulating onto a gradient already at +-float max stays finite.
      options.accumulate_gradient = true;
      for (const float start : {3.4e38F, -3.4e38F}) {
        std::vector<float> acc(3, start);
        rlcore::full_kl_from_logits_backward(zv, rv, gv, rlcore::make_matrix_view(acc.data(), 1, 3),
                                             options);
        for (float v : acc) {
          CHECK(std::isfinite(v));
        }
      }
    }
  }
}
