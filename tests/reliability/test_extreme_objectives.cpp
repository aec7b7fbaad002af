// Extreme inputs of the objectives: log-ratios of +-1e4 (clamped to +-20 before exp, with the
// clamp zeroing the gradient through it), NaN / inf at masked slots (never read), all-masked rows
// and batches, advantages of 1e30, value targets of 1e30, and the aggregation modes' normalisers.
#include "reliability_util.hpp"

#include <rlcore/objective/grpo.hpp>
#include <rlcore/objective/kl_penalty.hpp>
#include <rlcore/objective/policy.hpp>
#include <rlcore/objective/value_loss.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

using rlcore::index_t;

namespace {

struct one_token_case {
  double delta; // lp - old
  double advantage;
  double loss; // expected
};

// One valid token, token_mean: loss = l, gradient d l / d lp.
rlcore::objective_result one_token(double delta, double advantage, std::vector<double>& grad,
                                   const rlcore::policy_options& options = {}) {
  auto layout = rlcore::padded_unmasked(1, 1);
  std::vector<double> lp{-1.0};
  std::vector<double> old{-1.0 - delta};
  std::vector<double> adv{advantage};
  grad.assign(1, 9.0);
  return rlcore::policy_objective(layout, rlcore::make_matrix_view(lp.data(), 1, 1),
                                  rlcore::make_matrix_view(old.data(), 1, 1),
                                  rlcore::make_matrix_view(adv.data(), 1, 1),
                                  rlcore::make_matrix_view(grad.data(), 1, 1), options);
}

} // namespace

TEST_CASE("clipped surrogate at log-ratios of +-1e4") {
  // delta is clamped to [-20, 20]: ratio = e^{+-20}. l = max(-A r, -A clip(r, 0.8, 1.2)).
  //   delta = +1e4, A = +1: max(-e^20, -1.2) = -1.2 (clipped branch)
  //   delta = +1e4, A = -1: max(e^20, 1.2) = e^20 (unclipped, through the active clamp)
  //   delta = -1e4, A = +1: max(-e^-20, -0.8) = -e^-20 (unclipped, through the active clamp)
  //   delta = -1e4, A = -1: max(e^-20, 0.8) = 0.8 (clipped branch)
  // Every gradient is 0: clipped branches have none, and the active clamp zeroes the others.
  const double e20 = std::exp(20.0);
  for (const one_token_case& c :
       {one_token_case{1e4, 1.0, -1.2}, one_token_case{1e4, -1.0, e20},
        one_token_case{-1e4, 1.0, -std::exp(-20.0)}, one_token_case{-1e4, -1.0, 0.8}}) {
    CAPTURE(c.delta);
    CAPTURE(c.advantage);
    std::vector<double> grad;
    const auto r = one_token(c.delta, c.advantage, grad);
    CHECK(r.loss == doctest::Approx(c.loss).epsilon(1e-12));
    CHECK(grad[0] == 0.0);
  }
  // Dual clip c = 3 bounds the A < 0 branch: min(e^20, 3 * 1) = 3.
  rlcore::policy_options dual;
  dual.dual_clip = 3;
  std::vector<double> grad;
  const auto r = one_token(1e4, -1.0, grad, dual);
  CHECK(r.loss == doctest::Approx(3.0));
  CHECK(r.metrics.dual_clip_fraction == 1.0);
}

TEST_CASE("every loss form stays finite at log-ratios of +-1e4 and advantages of 1e30") {
  for (auto form :
       {rlcore::policy_loss::clipped, rlcore::policy_loss::gspo, rlcore::policy_loss::gmpo,
        rlcore::policy_loss::cispo, rlcore::policy_loss::sapo, rlcore::policy_loss::reinforce}) {
    for (double delta : {1e4, -1e4}) {
      for (double advantage : {1e30, -1e30}) {
        CAPTURE(static_cast<int>(form));
        CAPTURE(delta);
        CAPTURE(advantage);
        rlcore::policy_options o;
        o.loss = form;
        std::vector<double> grad;
        const auto r = one_token(delta, advantage, grad, o);
        CHECK(std::isfinite(r.loss));
        CHECK(std::isfinite(grad[0]));
      }
    }
  }
}

TEST_CASE("k3 KL at +-1e4: clamped to +-20, value finite, gradient 0 through the clamp") {
  // x = lp - ref clamped to [-20, 20]; k3 = exp(-x) + x - 1.
  //   x = +1e4 -> exp(-20) + 19;  x = -1e4 -> exp(20) - 21.
  auto layout = rlcore::padded_unmasked(1, 2);
  std::vector<double> lp{0.0, 0.0};
  std::vector<double> ref{-1e4, 1e4};
  std::vector<double> grad(2, 9.0);
  const auto r = rlcore::kl_penalty_loss(layout, rlcore::make_matrix_view(lp.data(), 1, 2),
                                         rlcore::make_matrix_view(ref.data(), 1, 2),
                                         rlcore::make_matrix_view(grad.data(), 1, 2));
  const double expected = ((std::exp(-20.0) + 19) + (std::exp(20.0) - 21)) / 2; // token_mean
  CHECK(r.loss == doctest::Approx(expected).epsilon(1e-12));
  CHECK(grad == std::vector<double>{0.0, 0.0});
}

TEST_CASE("NaN and inf at masked slots are never read") {
  // Row 0: one valid token (lp - old = 0, ratio 1, A = 2); every other slot is masked and holds
  // NaN / inf in every input. REINFORCE with token_mean: loss = -A * lp = -2 * -0.5 = 1,
  // grad = -A = -2 at the valid slot and exactly 0 elsewhere.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::uint8_t> mask{1, 0, 0, 0};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 2));
  std::vector<double> lp{-0.5, nan, inf, -inf};
  std::vector<double> old{-0.5, inf, nan, nan};
  std::vector<double> adv{2.0, inf, -inf, nan};
  std::vector<double> grad(4, 9.0);
  rlcore::policy_options o;
  o.loss = rlcore::policy_loss::reinforce;
  const auto r = rlcore::policy_objective(
      layout, rlcore::make_matrix_view(lp.data(), 2, 2), rlcore::make_matrix_view(old.data(), 2, 2),
      rlcore::make_matrix_view(adv.data(), 2, 2), rlcore::make_matrix_view(grad.data(), 2, 2), o);
  CHECK(r.loss == doctest::Approx(1.0));
  CHECK(grad == std::vector<double>{-2.0, 0.0, 0.0, 0.0});
  CHECK(r.metrics.valid_tokens == 1.0);

  // The clipped value loss too: v = 1, v_old = 1, R = 0 -> 0.5 * 1^2 = 0.5, grad v - R = 1.
  std::vector<double> v{1.0, nan, inf, nan};
  std::vector<double> v_old{1.0, inf, nan, -inf};
  std::vector<double> ret{0.0, -inf, nan, inf};
  std::vector<double> gv(4, 9.0);
  const auto vr = rlcore::value_loss(layout, rlcore::make_matrix_view(v.data(), 2, 2),
                                     rlcore::make_matrix_view(v_old.data(), 2, 2),
                                     rlcore::make_matrix_view(ret.data(), 2, 2),
                                     rlcore::make_matrix_view(gv.data(), 2, 2));
  CHECK(vr.loss == doctest::Approx(0.5));
  CHECK(gv == std::vector<double>{1.0, 0.0, 0.0, 0.0});
}

TEST_CASE("all-masked rows and batches: defined normalisers, loss 0 where nothing is valid") {
  // Row 0: 2 valid tokens with REINFORCE terms -A lp = -1 * -1 = 1 each; row 1: all masked.
  //   token_mean            (1 + 1) / 2 = 1
  //   seq_mean_token_sum    (1 + 1) / N_seqs = 2 / 2 = 1
  //   seq_mean_token_mean   [(1 + 1) / 2 + 0] / 2 = 0.5 (the empty row contributes 0)
  //   token_sum             2
  std::vector<std::uint8_t> mask{1, 1, 0, 0};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 2));
  std::vector<double> lp(4, -1.0);
  std::vector<double> adv(4, 1.0);
  std::vector<double> grad(4);
  const auto run = [&](rlcore::aggregation mode) {
    rlcore::policy_options o;
    o.loss = rlcore::policy_loss::reinforce;
    o.aggregation.mode = mode;
    return rlcore::policy_objective(layout, rlcore::make_matrix_view(lp.data(), 2, 2),
                                    rlcore::make_matrix_view(lp.data(), 2, 2),
                                    rlcore::make_matrix_view(adv.data(), 2, 2),
                                    rlcore::make_matrix_view(grad.data(), 2, 2), o)
        .loss;
  };
  CHECK(run(rlcore::aggregation::token_mean) == doctest::Approx(1.0));
  CHECK(run(rlcore::aggregation::seq_mean_token_sum) == doctest::Approx(1.0));
  CHECK(run(rlcore::aggregation::seq_mean_token_mean) == doctest::Approx(0.5));
  CHECK(grad == std::vector<double>{-0.25, -0.25, 0.0, 0.0}); // w = 1 / (N_seqs n_0) = 1/4
  CHECK(run(rlcore::aggregation::token_sum) == doctest::Approx(2.0));

  // A batch without any valid token: loss 0 and a zero gradient, not 0 / 0.
  std::vector<std::uint8_t> nothing{0, 0, 0, 0};
  auto empty = rlcore::padded(rlcore::make_matrix_view(nothing.data(), 2, 2));
  std::vector<double> g(4, 9.0);
  const auto r = rlcore::grpo_objective(
      empty, rlcore::make_matrix_view(lp.data(), 2, 2), rlcore::make_matrix_view(lp.data(), 2, 2),
      rlcore::make_matrix_view(lp.data(), 2, 2), rlcore::make_matrix_view(adv.data(), 2, 2),
      rlcore::make_matrix_view(g.data(), 2, 2));
  CHECK(r.loss == 0.0);
  CHECK(g == std::vector<double>{0.0, 0.0, 0.0, 0.0});
  CHECK(r.metrics.valid_tokens == 0.0);
}

TEST_CASE("value loss with targets of 1e30 stays finite") {
  // v = 0, v_old = 0, R = 1e30, c = 0.5: both branches give (0 - 1e30)^2, loss 0.5e60, grad -1e30.
  auto layout = rlcore::padded_unmasked(1, 1);
  std::vector<double> v{0.0};
  std::vector<double> ret{1e30};
  std::vector<double> grad(1);
  const auto r = rlcore::value_loss(
      layout, rlcore::make_matrix_view(v.data(), 1, 1), rlcore::make_matrix_view(v.data(), 1, 1),
      rlcore::make_matrix_view(ret.data(), 1, 1), rlcore::make_matrix_view(grad.data(), 1, 1));
  CHECK(r.loss == doctest::Approx(0.5e60));
  CHECK(grad[0] == doctest::Approx(-1e30));
}
