// token_log_probs_backward: central finite differences in double of the forward, with and
// without entropy and temperature; accumulate vs overwrite; in-place; float vs double.
#include "logits_reference.hpp"

#include <rlcore/objective/logits.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

using rlcore::index_t;

namespace {

// sum_r g_lp[r] lp[r] + g_h[r] H[r] through rlcore's forward (the function whose gradient the
// backward claims to compute).
double weighted_forward(const std::vector<double>& logits, index_t rows, index_t vocab,
                        const std::vector<int>& ids, const std::vector<double>& g_lp,
                        const std::vector<double>& g_h, const rlcore::logits_options& options) {
  std::vector<double> lp(static_cast<std::size_t>(rows));
  std::vector<double> h(static_cast<std::size_t>(rows));
  rlcore::token_log_probs(rlcore::make_matrix_view(logits.data(), rows, vocab), ids, lp, h,
                          options);
  double out = 0;
  for (std::size_t r = 0; r < lp.size(); ++r) {
    out += g_lp[r] * lp[r] + g_h[r] * h[r];
  }
  return out;
}

} // namespace

TEST_CASE("token_log_probs_backward matches central finite differences") {
  const index_t rows = 3;
  for (index_t vocab : {index_t{1}, index_t{2}, index_t{5}, index_t{13}}) {
    const auto logits =
        logits_ref::random_logits(static_cast<std::size_t>(rows * vocab), 3.0, 7 + vocab);
    std::vector<int> ids(static_cast<std::size_t>(rows));
    for (index_t r = 0; r < rows; ++r) {
      ids[static_cast<std::size_t>(r)] = static_cast<int>((2 * r + 1) % vocab);
    }
    const std::vector<double> g_lp{1.0, -0.5, 2.0};
    for (bool with_entropy : {false, true}) {
      for (double tau : {1.0, 0.7, 2.5}) {
        INFO("V = ", vocab, ", entropy = ", with_entropy, ", tau = ", tau);
        rlcore::logits_options options;
        options.temperature = tau;
        const std::vector<double> g_h =
            with_entropy ? std::vector<double>{0.3, -1.0, 0.25} : std::vector<double>(3, 0.0);
        std::vector<double> grad(logits.size(), 99.0);
        const auto gz = rlcore::make_matrix_view(grad.data(), rows, vocab);
        const auto z = rlcore::make_matrix_view(logits.data(), rows, vocab);
        if (with_entropy) {
          rlcore::token_log_probs_backward(z, ids, g_lp, g_h, gz, options);
        } else {
          rlcore::token_log_probs_backward(z, ids, g_lp, gz, options);
        }
        const auto f = [&](const std::vector<double>& x) {
          return weighted_forward(x, rows, vocab, ids, g_lp, g_h, options);
        };
        for (std::size_t j = 0; j < logits.size(); ++j) {
          CHECK(grad[j]
                == doctest::Approx(logits_ref::central_difference(f, logits, j))
                       .epsilon(1e-6)
                       .scale(1));
        }
      }
    }
  }
}

TEST_CASE("token_log_probs_backward: accumulate adds, overwrite replaces, in-place works") {
  const index_t rows = 2;
  const index_t vocab = 6;
  const auto logits = logits_ref::random_logits(12, 4.0, 3);
  const std::vector<int> ids{5, 0};
  const std::vector<double> g_lp{1.0, 0.5};
  const std::vector<double> g_h{-0.2, 0.7};
  const auto z = rlcore::make_matrix_view(logits.data(), rows, vocab);

  std::vector<double> fresh(12, 0.0);
  rlcore::token_log_probs_backward(z, ids, g_lp, g_h, rlcore::make_matrix_view(fresh.data(), 2, 6));

  std::vector<double> overwritten(12, 123.0);
  rlcore::token_log_probs_backward(z, ids, g_lp, g_h,
                                   rlcore::make_matrix_view(overwritten.data(), 2, 6));
  CHECK(overwritten == fresh);

  std::vector<double> accumulated(12);
  for (std::size_t j = 0; j < 12; ++j) {
    accumulated[j] = 0.25 * static_cast<double>(j);
  }
  rlcore::logits_options accumulate;
  accumulate.accumulate_gradient = true;
  rlcore::token_log_probs_backward(z, ids, g_lp, g_h,
                                   rlcore::make_matrix_view(accumulated.data(), 2, 6), accumulate);
  for (std::size_t j = 0; j < 12; ++j) {
    CHECK(accumulated[j] == doctest::Approx(0.25 * static_cast<double>(j) + fresh[j]));
  }

  // In place: the gradient overwrites the logits buffer (llm.c style memory reuse).
  std::vector<double> buffer = logits;
  const auto zb = rlcore::make_matrix_view(buffer.data(), 2, 6);
  rlcore::token_log_probs_backward(zb.as_const(), ids, g_lp, g_h, zb);
  CHECK(buffer == fresh);
}

TEST_CASE("token_log_probs_backward: float logits follow the double gradient") {
  const index_t rows = 2;
  const index_t vocab = 40;
  const auto values = logits_ref::random_logits(80, 6.0, 5);
  const std::vector<float> logits_f(values.begin(), values.end());
  const std::vector<double> logits_d(logits_f.begin(), logits_f.end());
  const std::vector<int> ids{39, 17};
  const std::vector<float> g_lp_f{1.0F, -2.0F};
  const std::vector<double> g_lp_d{1.0, -2.0};
  std::vector<float> grad_f(80);
  std::vector<double> grad_d(80);
  rlcore::logits_options options;
  options.temperature = 0.8;
  rlcore::token_log_probs_backward(rlcore::make_matrix_view(logits_f.data(), rows, vocab), ids,
                                   g_lp_f, rlcore::make_matrix_view(grad_f.data(), rows, vocab),
                                   options);
  rlcore::token_log_probs_backward(rlcore::make_matrix_view(logits_d.data(), rows, vocab), ids,
                                   g_lp_d, rlcore::make_matrix_view(grad_d.data(), rows, vocab),
                                   options);
  for (std::size_t j = 0; j < 80; ++j) {
    CHECK(double(grad_f[j]) == doctest::Approx(grad_d[j]).epsilon(1e-5).scale(1e-6));
  }
}

TEST_CASE("token_log_probs_backward: rows of a softmax gradient sum to 0; huge logits finite") {
  const float big = 3.0e38F;
  const std::vector<float> logits{big, -big, 0.0F, big, -big, -big, big, 1.0F};
  const std::vector<int> ids{1, 3};
  const std::vector<float> g_lp{1.0F, 1.0F};
  const std::vector<float> g_h{1.0F, 1.0F};
  for (double tau : {1.0, 0.25}) {
    rlcore::logits_options options;
    options.temperature = tau;
    std::vector<float> grad(8);
    rlcore::token_log_probs_backward(rlcore::make_matrix_view(logits.data(), 2, 4), ids, g_lp, g_h,
                                     rlcore::make_matrix_view(grad.data(), 2, 4), options);
    for (float g : grad) {
      CHECK(std::isfinite(g));
    }
    // Row 0: p = (1/2, 0, 0, 1/2), id 1 (p = 0): d lp = (-1/2, 1, 0, -1/2) / tau; the entropy
    // gradient is 0 (uniform over the support).
    CHECK(grad[0] == doctest::Approx(-0.5 / tau));
    CHECK(grad[1] == doctest::Approx(1.0 / tau));
    CHECK(grad[2] == 0.0F);
    CHECK(grad[3] == doctest::Approx(-0.5 / tau));
    // Row 1: p = (0, 0, 1, 0), id 3: d lp = (0, 0, -1, 1) / tau.
    CHECK(grad[6] == doctest::Approx(-1.0 / tau));
    CHECK(grad[7] == doctest::Approx(1.0 / tau));
  }
}
