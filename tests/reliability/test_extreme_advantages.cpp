// Extreme inputs of the advantage estimators: rewards up to 1e30, identical huge rewards, G = 1,
// N = 1, empty offset groups, all-masked rows, one-token sequences, NaN scores (confined to their
// group) and missing rewards under the NaN policies. Expected values are derived by hand below.
#include "reliability_util.hpp"

#include <rlcore/advantage/all.hpp>
#include <rlcore/advantage/reward.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

using rlcore::index_t;
using rlcore_reliability::check_invalid;

TEST_CASE("GRPO with rewards of 1e30: standardised values, no overflow") {
  // Scores {1e30, 1e30, 0}: mean 2/3 e30, deviations {1/3, 1/3, -2/3} e30, unbiased variance
  // (1/9 + 1/9 + 4/9) / 2 e60 = 1/3 e60, std = e30 / sqrt(3). a = dev / std (eps = 1e-6 is
  // negligible): {sqrt(3)/3, sqrt(3)/3, -2 sqrt(3)/3} = {0.57735.., 0.57735.., -1.1547..}.
  std::vector<double> scores{1e30, 1e30, 0.0};
  std::vector<double> a(3);
  const auto stats = rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{3}, a);
  const double r3 = std::sqrt(3.0);
  CHECK(a[0] == doctest::Approx(r3 / 3).epsilon(1e-12));
  CHECK(a[1] == doctest::Approx(r3 / 3).epsilon(1e-12));
  CHECK(a[2] == doctest::Approx(-2 * r3 / 3).epsilon(1e-12));
  CHECK(stats.zero_spread_fraction == 0.0);

  // Float output: the same values, finite.
  std::vector<float> af(3);
  rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{3}, af);
  CHECK(af[2] == doctest::Approx(-2 * r3 / 3).epsilon(1e-6));

  // Scaling none (Dr. GRPO) keeps the 1e30 scale: {1/3, 1/3, -2/3} e30.
  rlcore::grpo_advantage_options none;
  none.scaling = rlcore::grpo_scaling::none;
  rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{3}, a, none);
  CHECK(a[2] == doctest::Approx(-2e30 / 3).epsilon(1e-12));
  CHECK(a[0] + a[1] + a[2] == doctest::Approx(0.0).epsilon(1e-12).scale(1e30));
}

TEST_CASE("identical huge rewards give exactly 0, never rounding residue") {
  // -1e30 repeated 5 times: two-pass moments give mean exactly -1e30 and every deviation exactly 0.
  std::vector<double> scores(5, -1e30);
  std::vector<double> a(5, 9.0);
  const auto stats = rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{5}, a);
  for (double x : a) {
    CHECK(x == 0.0);
  }
  CHECK(stats.zero_spread_fraction == 1.0);
  // 0.1 does not add exactly (0.1 * 3 != 0.3): a naive one-pass mean leaves residue / eps.
  std::vector<double> tenths(3, 0.1);
  std::vector<double> b(3, 9.0);
  rlcore::grpo_outcome_sequence_advantages(tenths, rlcore::uniform_groups{3}, b);
  CHECK(b[0] == 0.0);
  CHECK(b[1] == 0.0);
  CHECK(b[2] == 0.0);
}

TEST_CASE("G = 1 and N = 1: defined results for every group estimator") {
  std::vector<double> one{1e30};
  std::vector<double> a(1, 9.0);
  // GRPO default: a lone response has no relative signal -> 0.
  rlcore::grpo_outcome_sequence_advantages(one, rlcore::uniform_groups{1}, a);
  CHECK(a[0] == 0.0);
  // verl's raw reward: mean := 0, std := 1 -> 1e30 / (1 + 1e-6).
  rlcore::grpo_advantage_options raw;
  raw.singleton_group = rlcore::singleton_group_policy::raw_reward;
  rlcore::grpo_outcome_sequence_advantages(one, rlcore::uniform_groups{1}, a, raw);
  CHECK(a[0] == doctest::Approx(1e30 / (1 + 1e-6)).epsilon(1e-15));

  // RLOO and OPO on N = 1, T = 2: 0 at every token.
  auto layout = rlcore::padded_unmasked(1, 2);
  std::vector<double> tokens(2, 9.0);
  auto tv = rlcore::make_matrix_view(tokens.data(), 1, 2);
  rlcore::rloo_advantages(layout, one, rlcore::uniform_groups{1}, tv);
  CHECK(tokens == std::vector<double>{0.0, 0.0});
  tokens.assign(2, 9.0);
  rlcore::opo_advantages(layout, one, rlcore::uniform_groups{1}, tv);
  CHECK(tokens == std::vector<double>{0.0, 0.0});
  // pass@k needs two responses: a group of one is an error naming `groups`.
  check_invalid([&] { rlcore::pass_at_k_advantages(layout, one, rlcore::uniform_groups{1}, tv); },
                "groups", "at least 2 sequences");
}

TEST_CASE("empty offset groups hold nothing and change nothing") {
  // Groups {[0, 0), [0, 2), [2, 2)}: only the middle one holds sequences. Scores {1, 3}:
  // mean 2, unbiased std sqrt(2) -> a = -+1 / (sqrt(2) + 1e-6).
  std::vector<std::int64_t> offsets{0, 0, 2, 2};
  std::vector<double> scores{1.0, 3.0};
  std::vector<double> a(2);
  const auto stats =
      rlcore::grpo_outcome_sequence_advantages(scores, rlcore::group_offsets(offsets), a);
  CHECK(a[0] == doctest::Approx(-1 / (std::sqrt(2.0) + 1e-6)).epsilon(1e-14));
  CHECK(a[1] == doctest::Approx(1 / (std::sqrt(2.0) + 1e-6)).epsilon(1e-14));
  CHECK(stats.num_groups == 3);
  CHECK(stats.zero_spread_fraction == 0.0); // among the one non-empty group
}

TEST_CASE("all-masked rows: 0 at every slot, no division by zero") {
  // Row 1 is fully masked (n_1 = 0) and holds garbage rewards.
  std::vector<std::uint8_t> mask{1, 1, 0, 0};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 2));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> rewards{1.0, 2.0, nan, 1e30};
  std::vector<double> values{0.5, 0.25, nan, -1e30};
  auto rv = rlcore::make_matrix_view(rewards.data(), 2, 2);
  auto vv = rlcore::make_matrix_view(values.data(), 2, 2);

  // Scores: row 0 = 3, the all-masked row scores 0 (masked slots are skipped, not multiplied).
  std::vector<double> scores(2);
  rlcore::sequence_scores(layout, rv, scores);
  CHECK(scores == std::vector<double>{3.0, 0.0});

  // GAE (gamma = lambda = 1) on row 0: A_1 = 2 - 0.25 = 1.75, A_0 = 1 + 0.25 - 0.5 + 1.75 = 2.5;
  // returns = A + V = {3, 2}. Row 1: zeros.
  std::vector<double> adv(4, 9.0);
  std::vector<double> ret(4, 9.0);
  rlcore::gae_advantages(layout, rv, vv, rlcore::make_matrix_view(adv.data(), 2, 2),
                         rlcore::make_matrix_view(ret.data(), 2, 2));
  CHECK(adv == std::vector<double>{2.5, 1.75, 0.0, 0.0});
  CHECK(ret == std::vector<double>{3.0, 2.0, 0.0, 0.0});

  // OPO: the all-masked row has weight 0 in the baseline: b = (2 * 3 + 0 * 0) / 2 = 3, so row 0
  // gets 0 and row 1 (no token) writes nothing.
  std::vector<double> opo(4, 9.0);
  rlcore::opo_advantages(layout, scores, rlcore::uniform_groups{2},
                         rlcore::make_matrix_view(opo.data(), 2, 2));
  CHECK(opo == std::vector<double>{0.0, 0.0, 0.0, 0.0});

  // Whitening a batch with no valid token: nothing to whiten, no error, masked slots set to 0.
  std::vector<std::uint8_t> none{0, 0};
  auto empty = rlcore::padded(rlcore::make_matrix_view(none.data(), 1, 2));
  std::vector<double> x{nan, 1e30};
  rlcore::whiten(empty, rlcore::make_matrix_view(x.data(), 1, 2));
  CHECK(x == std::vector<double>{0.0, 0.0});
}

TEST_CASE("one-token sequences") {
  // GAE with T = 1: A = r - V, returns = r.
  auto layout = rlcore::padded_unmasked(2, 1);
  std::vector<double> r{1e30, -3.0};
  std::vector<double> v{2.0, -1.0};
  std::vector<double> adv(2);
  std::vector<double> ret(2);
  rlcore::gae_advantages(
      layout, rlcore::make_matrix_view(r.data(), 2, 1), rlcore::make_matrix_view(v.data(), 2, 1),
      rlcore::make_matrix_view(adv.data(), 2, 1), rlcore::make_matrix_view(ret.data(), 2, 1));
  CHECK(adv[0] == 1e30); // 1e30 - 2 rounds to 1e30
  CHECK(adv[1] == -2.0);
  CHECK(ret[1] == -3.0);

  // Whitening one valid token: the unbiased variance is undefined -> error naming x_inout; the
  // population form gives (x - x) / sqrt(0 + eps) = 0.
  auto single = rlcore::padded_unmasked(1, 1);
  std::vector<double> x{1e30};
  check_invalid([&] { rlcore::whiten(single, rlcore::make_matrix_view(x.data(), 1, 1)); },
                "x_inout", "at least 2 valid tokens, got 1");
  rlcore::whiten_options population;
  population.kind = rlcore::whiten_kind::population;
  rlcore::whiten(single, rlcore::make_matrix_view(x.data(), 1, 1), population);
  CHECK(x[0] == 0.0);
}

TEST_CASE("NaN and inf scores stay inside their group") {
  // Group 0 = {1, NaN}, group 1 = {2, 3}: group 1 (mean 2.5, deviations -+0.5, unbiased std
  // sqrt(0.5)) gets -+0.5 / (sqrt(0.5) + 1e-6) whatever group 0 holds; group 0 is NaN (no check on
  // scores: validate rewards with the reward utilities).
  for (double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    std::vector<double> scores{1.0, bad, 2.0, 3.0};
    std::vector<double> a(4);
    rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{2}, a);
    CHECK(std::isnan(a[0]));
    CHECK(std::isnan(a[1]));
    CHECK(a[2] == doctest::Approx(-0.5 / (std::sqrt(0.5) + 1e-6)).epsilon(1e-14));
    CHECK(a[3] == doctest::Approx(0.5 / (std::sqrt(0.5) + 1e-6)).epsilon(1e-14));
  }
}

TEST_CASE("missing rewards: an error by default, skipped by option") {
  // Columns (N = 2, K = 2) {{1, NaN}, {2, 4}}, weights {1, 0.5}.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> columns{1.0, nan, 2.0, 4.0};
  const auto c = rlcore::make_matrix_view(columns.data(), 2, 2);
  std::vector<double> weights{1.0, 0.5};
  std::vector<double> out(2);
  check_invalid([&] { rlcore::weighted_reward_sum(c, weights, out); }, "reward_columns", "NaN");
  rlcore::reward_sum_options skip;
  skip.nan_policy = rlcore::nan_policy::skip_column;
  rlcore::weighted_reward_sum(c, weights, out, skip);
  CHECK(out[0] == 1.0); // the NaN column contributes nothing to row 0
  CHECK(out[1] == 4.0); // 2 + 0.5 * 4
}
