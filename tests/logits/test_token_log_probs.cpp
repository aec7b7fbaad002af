// token_log_probs (flat form): values against the naive reference, vocabulary tails, strides,
// temperature, float and double, huge logits.
#include "logits_reference.hpp"

#include <rlcore/backend/eigen/eigen.hpp>
#include <rlcore/objective/logits.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <vector>

using rlcore::index_t;

TEST_CASE("token_log_probs: hand-derived two-row example") {
  // Row 0: z = (0, ln 2, ln 3), id 2: lp = -ln 2, H = (1/6) ln 6 + (1/3) ln 3 + (1/2) ln 2.
  // Row 1: z = (5, 5, 5), id 0: lp = -ln 3, H = ln 3.
  const std::vector<double> logits{0.0, std::log(2.0), std::log(3.0), 5.0, 5.0, 5.0};
  const auto z = rlcore::make_matrix_view(logits.data(), 2, 3);
  const std::vector<int> ids{2, 0};
  std::vector<double> lp(2, -1.0);
  std::vector<double> h(2, -1.0);
  rlcore::token_log_probs(z, ids, lp, h);
  CHECK(lp[0] == doctest::Approx(-std::log(2.0)));
  CHECK(lp[1] == doctest::Approx(-std::log(3.0)));
  CHECK(h[0] == doctest::Approx(std::log(6.0) / 6 + std::log(3.0) / 3 + std::log(2.0) / 2));
  CHECK(h[1] == doctest::Approx(std::log(3.0)));

  std::vector<double> lp_only(2, -1.0);
  rlcore::token_log_probs(z, ids, lp_only);
  CHECK(lp_only == lp);
}

TEST_CASE_TEMPLATE("token_log_probs: vocabulary sizes that are multiples of no tile", T, float,
                   double) {
  // 1, 2, 3, 7 and 32001 columns: every size must be exact against the naive two-pass reference
  // (a padded tile lane adding exp(0) would be off by O(1 / V) at least).
  for (index_t vocab : {index_t{1}, index_t{2}, index_t{3}, index_t{7}, index_t{32001}}) {
    const index_t rows = 3;
    const auto values = logits_ref::random_logits(static_cast<std::size_t>(rows * vocab), 8.0,
                                                  static_cast<unsigned>(vocab));
    const std::vector<T> logits(values.begin(), values.end());
    std::vector<std::int64_t> ids(static_cast<std::size_t>(rows));
    for (index_t r = 0; r < rows; ++r) {
      ids[static_cast<std::size_t>(r)] = (r * 5 + 1) % vocab;
    }
    for (double tau : {1.0, 0.6, 1.7}) {
      INFO("V = ", vocab, ", tau = ", tau);
      std::vector<T> lp(static_cast<std::size_t>(rows));
      std::vector<T> h(static_cast<std::size_t>(rows));
      rlcore::logits_options options;
      options.temperature = tau;
      rlcore::token_log_probs(rlcore::make_matrix_view(logits.data(), rows, vocab), ids, lp, h,
                              options);
      for (index_t r = 0; r < rows; ++r) {
        const std::vector<logits_ref::real> row(logits.begin() + r * vocab,
                                                logits.begin() + (r + 1) * vocab);
        const auto ref_lp = logits_ref::log_softmax(row, tau);
        const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-13;
        const auto ri = static_cast<std::size_t>(r);
        CHECK(double(lp[ri])
              == doctest::Approx(double(ref_lp[static_cast<std::size_t>(ids[ri])]))
                     .epsilon(tol)
                     .scale(1));
        CHECK(double(h[ri])
              == doctest::Approx(double(logits_ref::entropy(row, tau))).epsilon(tol).scale(1));
      }
    }
  }
}

TEST_CASE("token_log_probs: strided logits (column-major Eigen, a sub-block) match contiguous") {
  const index_t rows = 4;
  const index_t vocab = 9;
  const auto values = logits_ref::random_logits(static_cast<std::size_t>(rows * vocab), 5.0, 11);
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major(rows, vocab);
  for (index_t r = 0; r < rows; ++r) {
    for (index_t v = 0; v < vocab; ++v) {
      row_major(r, v) = values[static_cast<std::size_t>(r * vocab + v)];
    }
  }
  const Eigen::MatrixXd col_major = row_major; // column-major copy
  Eigen::MatrixXd big = Eigen::MatrixXd::Constant(rows + 3, vocab + 5, 1e30);
  big.block(2, 3, rows, vocab) = row_major; // a sub-block with an outer stride
  const std::vector<int> ids{0, 8, 3, 4};
  std::vector<double> expected(4);
  std::vector<double> from_col(4);
  std::vector<double> from_block(4);
  rlcore::token_log_probs(row_major, ids, expected);
  rlcore::token_log_probs(col_major, ids, from_col);
  const Eigen::Block<const Eigen::MatrixXd> block = std::as_const(big).block(2, 3, rows, vocab);
  rlcore::token_log_probs(block, ids, from_block);
  CHECK(from_col == expected);
  CHECK(from_block == expected);
  // Outputs can be strided too: an Eigen row vector view of every other element of a buffer.
  std::vector<double> strided(8, 7.0);
  Eigen::Map<Eigen::VectorXd, 0, Eigen::InnerStride<2>> out(strided.data(), 4);
  rlcore::token_log_probs(row_major, ids, out);
  for (std::size_t r = 0; r < 4; ++r) {
    CHECK(strided[2 * r] == expected[r]);
    CHECK(strided[2 * r + 1] == 7.0);
  }
}

TEST_CASE("token_log_probs: float logits near the float maximum give finite results") {
  const float big = 3.0e38F;
  const std::vector<float> logits{big, -big, 0.0F, big, -big, -big, big, 1.0F};
  const std::vector<int> ids{0, 1};
  for (double tau : {1.0, 0.25, 4.0}) {
    std::vector<float> lp(2);
    std::vector<float> h(2);
    rlcore::logits_options options;
    options.temperature = tau;
    rlcore::token_log_probs(rlcore::make_matrix_view(logits.data(), 2, 4), ids, lp, h, options);
    CHECK(lp[0] == doctest::Approx(-std::log(2.0)));
    CHECK(h[0] == doctest::Approx(std::log(2.0)));
    CHECK(std::isfinite(lp[1])); // -big against big: log-prob floored at -float max
    CHECK(lp[1] <= -1e38F);
    CHECK(h[1] == 0.0F); // one token holds all the mass
  }
}

TEST_CASE("token_log_probs: -inf logits under the propagate policy mean probability 0") {
  // A vocabulary mask: z = (0, -inf, 0, -inf); p = (1/2, 0, 1/2, 0).
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> logits{0.0, -inf, 0.0, -inf};
  const std::vector<int> ids{2};
  std::vector<double> lp(1);
  std::vector<double> h(1);
  rlcore::logits_options options;
  options.nonfinite_logits = rlcore::nonfinite_logits_policy::propagate;
  rlcore::token_log_probs(rlcore::make_matrix_view(logits.data(), 1, 4), ids, lp, h, options);
  CHECK(lp[0] == doctest::Approx(-std::log(2.0)));
  CHECK(h[0] == doctest::Approx(std::log(2.0)));
  std::vector<double> grad(4);
  const std::vector<double> one{1.0};
  rlcore::token_log_probs_backward(rlcore::make_matrix_view(logits.data(), 1, 4), ids, one, one,
                                   rlcore::make_matrix_view(grad.data(), 1, 4), options);
  // d lp/dz = onehot - p = (-1/2, 0, 1/2, 0); dH/dz = -p (log p + H) = 0 for a uniform support.
  CHECK(grad[0] == doctest::Approx(-0.5));
  CHECK(grad[1] == 0.0);
  CHECK(grad[2] == doctest::Approx(0.5));
  CHECK(grad[3] == 0.0);
}

TEST_CASE("double logits near the double maximum give finite results and gradients") {
  const double big = 1.7e308;
  const std::vector<double> logits{big, -big, 0.0, big};
  const std::vector<double> ref{-big, big, big, 0.0};
  const std::vector<int> ids{1};
  std::vector<double> lp(1);
  std::vector<double> h(1);
  std::vector<double> kl(1);
  std::vector<double> grad(4);
  std::vector<double> grad_kl(4);
  const std::vector<double> one{1.0};
  const auto z = rlcore::make_matrix_view(logits.data(), 1, 4);
  const auto q = rlcore::make_matrix_view(ref.data(), 1, 4);
  rlcore::token_log_probs(z, ids, lp, h);
  rlcore::token_log_probs_backward(z, ids, one, one, rlcore::make_matrix_view(grad.data(), 1, 4));
  rlcore::full_kl_from_logits(z, q, kl);
  rlcore::full_kl_from_logits_backward(z, q, one, rlcore::make_matrix_view(grad_kl.data(), 1, 4));
  CHECK(std::isfinite(lp[0]));
  CHECK(lp[0] < -1e307);
  CHECK(h[0] == doctest::Approx(std::log(2.0)));
  CHECK(std::isfinite(kl[0]));
  for (std::size_t j = 0; j < 4; ++j) {
    CHECK(std::isfinite(grad[j]));
    CHECK(std::isfinite(grad_kl[j]));
  }
  // p = (1/2, 0, 0, 1/2), id 1: d lp/dz = (-1/2, 1, 0, -1/2), dH/dz = 0.
  CHECK(grad[0] == doctest::Approx(-0.5));
  CHECK(grad[1] == doctest::Approx(1.0));
  CHECK(grad[3] == doctest::Approx(-0.5));
}

TEST_CASE(
    "bf16 logits (Eigen::bfloat16) are accumulated in fp32: same bits as their float values") {
  // The accumulator of any non-double logit type is float, so bf16 logits give exactly what the
  // same values given as float give (the CUDA backend does the same on device).
  const auto values = logits_ref::random_logits(3 * 37, 6.0, 77);
  std::vector<Eigen::bfloat16> logits_bf16;
  std::vector<float> logits_f;
  for (double v : values) {
    logits_bf16.emplace_back(static_cast<float>(v));
    logits_f.push_back(static_cast<float>(logits_bf16.back()));
  }
  const std::vector<int> ids{36, 0, 18};
  std::vector<float> lp_bf16(3);
  std::vector<float> h_bf16(3);
  std::vector<float> lp_f(3);
  std::vector<float> h_f(3);
  rlcore::logits_options options;
  options.temperature = 0.9;
  const auto z_bf16 = rlcore::make_matrix_view(logits_bf16.data(), 3, 37);
  const auto z_f = rlcore::make_matrix_view(logits_f.data(), 3, 37);
  rlcore::token_log_probs(z_bf16, ids, lp_bf16, h_bf16, options);
  rlcore::token_log_probs(z_f, ids, lp_f, h_f, options);
  CHECK(lp_bf16 == lp_f);
  CHECK(h_bf16 == h_f);
  // The gradient can be written in bf16 too: the fp32 gradient rounded once.
  std::vector<Eigen::bfloat16> grad_bf16(3 * 37);
  std::vector<float> grad_f(3 * 37);
  const std::vector<float> g{1.0F, -0.5F, 2.0F};
  rlcore::token_log_probs_backward(z_bf16, ids, g, g,
                                   rlcore::make_matrix_view(grad_bf16.data(), 3, 37), options);
  rlcore::token_log_probs_backward(z_f, ids, g, g, rlcore::make_matrix_view(grad_f.data(), 3, 37),
                                   options);
  for (std::size_t j = 0; j < grad_f.size(); ++j) {
    CHECK(static_cast<float>(grad_bf16[j]) == static_cast<float>(Eigen::bfloat16(grad_f[j])));
  }
}
