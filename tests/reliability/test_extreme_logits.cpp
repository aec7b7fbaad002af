// Extreme inputs of the logits functions: logits at the bf16 maximum in float and double, vocab
// sizes that are not multiples of any tile (1, 32001, 151936), -inf vocabulary masks, NaN logits,
// out-of-range token ids and invalid temperatures.
#include "reliability_util.hpp"

#include <rlcore/objective/logits.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

using rlcore::index_t;
using rlcore_reliability::check_invalid;

TEST_CASE_TEMPLATE("logits at the bf16 maximum: exact log-probs, zero entropy, finite gradients", T,
                   float, double) {
  // Row {B, 0, -B}, B = bf16 max = 3.3895e38: softmax = (1, 0, 0) exactly in T, so
  // logsumexp = B, lp(0) = 0, lp(1) = -B, H = 0. lp(2) = -2B overflows float: it must stay finite
  // and below lp(1).
  const T b = static_cast<T>(3.3895313892515355e38);
  std::vector<T> z{b, T(0), -b};
  const auto logits = rlcore::make_matrix_view(z.data(), 1, 3);
  std::vector<std::int32_t> ids{0};
  std::vector<T> lp(1);
  std::vector<T> h(1);
  rlcore::token_log_probs(logits, ids, lp, h);
  CHECK(lp[0] == T(0));
  CHECK(h[0] == T(0));
  ids[0] = 1;
  rlcore::token_log_probs(logits, ids, lp, h);
  CHECK(lp[0] == -b);
  ids[0] = 2;
  rlcore::token_log_probs(logits, ids, lp, h);
  CHECK(std::isfinite(lp[0]));
  CHECK(lp[0] <= -b);
  // d lp(2) / dz = onehot(2) - p = (-1, 0, 1).
  std::vector<T> g{T(1)};
  std::vector<T> grad(3, T(9));
  rlcore::token_log_probs_backward(logits, ids, g, rlcore::make_matrix_view(grad.data(), 1, 3));
  CHECK(grad == std::vector<T>{T(-1), T(0), T(1)});
  // KL against the mirrored reference: finite (clamped to the largest finite value) and >= 0.
  std::vector<T> ref{-b, T(0), b};
  std::vector<T> kl(1);
  rlcore::full_kl_from_logits(logits, rlcore::make_matrix_view(ref.data(), 1, 3), kl);
  CHECK(std::isfinite(kl[0]));
  CHECK(kl[0] > T(0));
}

TEST_CASE("vocabulary sizes off any tile: uniform logits give lp = -log V, H = log V") {
  for (index_t vocab : {index_t{1}, index_t{32001}, index_t{151936}}) {
    CAPTURE(vocab);
    std::vector<float> z(static_cast<std::size_t>(vocab), 0.0f);
    std::vector<std::int32_t> ids{static_cast<std::int32_t>(vocab - 1)};
    std::vector<float> lp(1);
    std::vector<float> h(1);
    rlcore::token_log_probs(rlcore::make_matrix_view(z.data(), 1, vocab), ids, lp, h);
    const double log_v = std::log(static_cast<double>(vocab));
    CHECK(lp[0] == doctest::Approx(-log_v).epsilon(1e-6));
    CHECK(h[0] == doctest::Approx(log_v).epsilon(1e-6));
  }
}

TEST_CASE("-inf logits: an error by default, a vocabulary mask under propagate") {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> z{0.0f, -inf, 0.0f};
  const auto logits = rlcore::make_matrix_view(z.data(), 1, 3);
  std::vector<std::int32_t> ids{0};
  std::vector<float> lp(1);
  std::vector<float> h(1);
  check_invalid([&] { rlcore::token_log_probs(logits, ids, lp, h); }, "logits", "row 0");
  rlcore::logits_options propagate;
  propagate.nonfinite_logits = rlcore::nonfinite_logits_policy::propagate;
  // p = (1/2, 0, 1/2): lp(0) = -log 2, H = log 2 (the masked entry contributes 0, not 0 * -inf).
  rlcore::token_log_probs(logits, ids, lp, h, propagate);
  CHECK(lp[0] == doctest::Approx(-std::log(2.0)));
  CHECK(h[0] == doctest::Approx(std::log(2.0)));
  std::vector<float> g{1.0f};
  std::vector<float> grad(3, 9.0f);
  rlcore::token_log_probs_backward(logits, ids, g, rlcore::make_matrix_view(grad.data(), 1, 3),
                                   propagate);
  CHECK(grad[0] == doctest::Approx(0.5)); // 1 - p_0
  CHECK(grad[1] == 0.0f);                 // p_1 = 0
  CHECK(grad[2] == doctest::Approx(-0.5));
}

TEST_CASE("NaN logits, bad token ids and bad temperatures are named errors") {
  std::vector<double> z{0.0, std::numeric_limits<double>::quiet_NaN(), 1.0, 2.0};
  const auto logits = rlcore::make_matrix_view(z.data(), 2, 2);
  std::vector<std::int32_t> ids{0, 1};
  std::vector<double> lp(2);
  check_invalid([&] { rlcore::token_log_probs(logits, ids, lp); }, "logits", "row 0");
  z[1] = 0.0;
  std::vector<std::int32_t> bad{0, 2};
  check_invalid([&] { rlcore::token_log_probs(logits, bad, lp); }, "token_ids",
                "expected token ids in [0, V) = [0, 2");
  std::vector<std::int32_t> negative{-1, 0};
  check_invalid([&] { rlcore::token_log_probs(logits, negative, lp); }, "token_ids", "[0, V)");
  for (double tau : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity(), 1e-320}) {
    CAPTURE(tau);
    rlcore::logits_options o;
    o.temperature = tau;
    check_invalid([&] { rlcore::token_log_probs(logits, ids, lp, o); }, "options.temperature",
                  "finite temperature > 0");
  }
}
