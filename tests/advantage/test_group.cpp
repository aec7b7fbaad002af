// Group-relative estimators (GRPO, Dr. GRPO, batch scaling, RLOO, OPO, pass@k) on small cases
// worked out by hand in the comments.
#include <rlcore/advantage/group.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

using rlcore::index_t;

namespace {

constexpr double eps = 1e-6;

} // namespace

TEST_CASE_TEMPLATE("GRPO outcome: group scaling, hand values, masked tokens 0", T, float, double) {
  // Two groups of G = 3. Group 0 scores {1, 2, 3}: mean 2, unbiased var (1 + 0 + 1) / 2 = 1, so
  // a = {-1, 0, 1} / (1 + 1e-6). Group 1 scores {5, 5, 5}: zero spread, a = 0 exactly.
  std::vector<T> scores{1, 2, 3, 5, 5, 5};
  std::vector<std::uint8_t> mask{1, 1, 0, //
                                 1, 0, 1, //
                                 0, 0, 0, // all masked: every token 0
                                 1, 1, 1, //
                                 1, 1, 1, //
                                 1, 1, 1};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 6, 3));
  std::vector<T> adv(18, T(42));
  auto stats = rlcore::grpo_outcome_advantages(layout, scores, rlcore::uniform_groups{3},
                                               rlcore::make_matrix_view(adv.data(), 6, 3));
  const double a = 1.0 / (1.0 + eps);
  CHECK(adv[0] == doctest::Approx(-a));
  CHECK(adv[1] == doctest::Approx(-a));
  CHECK(adv[2] == T(0)); // masked
  CHECK(adv[3] == T(0));
  CHECK(adv[4] == T(0)); // masked
  CHECK(adv[5] == T(0));
  for (int t = 6; t < 9; ++t) {
    CHECK(adv[t] == T(0));
  }
  for (int t = 9; t < 18; ++t) {
    CHECK(adv[t] == T(0)); // identical rewards: exactly 0 (pitfall 3)
  }
  CHECK(stats.num_groups == 2);
  CHECK(stats.zero_spread_fraction == doctest::Approx(0.5));
  // Per-sequence advantages {-a, 0, a, 0, 0, 0}: mean 0, population std sqrt(2 a^2 / 6).
  CHECK(stats.advantage_mean == doctest::Approx(0.0));
  CHECK(stats.advantage_std == doctest::Approx(std::sqrt(2.0 * a * a / 6.0)).epsilon(1e-6));
}

TEST_CASE("GRPO outcome: population std, batch scaling and Dr. GRPO (none)") {
  std::vector<double> scores{1, 2, 3, 5, 5, 5};
  std::vector<double> out(6);
  rlcore::grpo_advantage_options options;

  // Population std of {1, 2, 3}: sqrt(2 / 3).
  options.std_kind = rlcore::std_kind::population;
  rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{3}, out, options);
  CHECK(out[2] == doctest::Approx(1.0 / (std::sqrt(2.0 / 3.0) + eps)));

  // Batch std of all six scores (unbiased): mean 3.5, squared deviations 6.25 + 2.25 + 0.25 +
  // 3 * 2.25 = 15.5, var 15.5 / 5 = 3.1. a_i = (s_i - mean_g) / (sqrt(3.1) + eps).
  options = {};
  options.scaling = rlcore::grpo_scaling::batch;
  rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{3}, out, options);
  CHECK(out[0] == doctest::Approx(-1.0 / (std::sqrt(3.1) + eps)));
  CHECK(out[2] == doctest::Approx(1.0 / (std::sqrt(3.1) + eps)));
  CHECK(out[4] == 0.0);

  // Dr. GRPO: s_i - mean_g.
  options.scaling = rlcore::grpo_scaling::none;
  rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{3}, out, options);
  CHECK(out[0] == -1.0);
  CHECK(out[1] == 0.0);
  CHECK(out[2] == 1.0);
  CHECK(out[5] == 0.0);
}

TEST_CASE("GRPO outcome: singleton groups (zero / raw reward) and empty offset groups") {
  // Offset groups {[0, 1), [1, 1) empty, [1, 3)}: scores {4 | 1, 3}. Group {1, 3}: mean 2,
  // unbiased std sqrt(2). The singleton gets 0 by default, 4 / (1 + eps) as verl.
  std::vector<double> scores{4, 1, 3};
  std::vector<index_t> offsets{0, 1, 1, 3};
  auto groups = rlcore::group_offsets(offsets);
  std::vector<double> out(3, 42.0);
  auto stats = rlcore::grpo_outcome_sequence_advantages(scores, groups, out);
  CHECK(out[0] == 0.0);
  CHECK(out[1] == doctest::Approx(-1.0 / (std::sqrt(2.0) + eps)));
  CHECK(out[2] == doctest::Approx(1.0 / (std::sqrt(2.0) + eps)));
  CHECK(stats.num_groups == 3);
  CHECK(stats.zero_spread_fraction == doctest::Approx(0.5)); // 1 of 2 non-empty groups

  rlcore::grpo_advantage_options options;
  options.singleton_group = rlcore::singleton_group_policy::raw_reward;
  rlcore::grpo_outcome_sequence_advantages(scores, groups, out, options);
  CHECK(out[0] == doctest::Approx(4.0 / (1.0 + eps)));
  options.scaling = rlcore::grpo_scaling::none;
  rlcore::grpo_outcome_sequence_advantages(scores, groups, out, options);
  CHECK(out[0] == 4.0);
  CHECK(out[1] == -1.0);
}

TEST_CASE("GRPO outcome: G = 1 everywhere gives 0, no division by zero (pitfall 5)") {
  std::vector<double> scores{3, -7, 1e30};
  std::vector<double> out(3, 42.0);
  auto stats = rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{1}, out);
  CHECK(out == std::vector<double>{0, 0, 0});
  CHECK(stats.zero_spread_fraction == 1.0);
}

TEST_CASE("RLOO: s_i minus the mean of the others") {
  // Group {1, 2, 3, 6}: 1 - 11/3 = -8/3, 2 - 10/3 = -4/3, 3 - 9/3 = 0, 6 - 6/3 = 4.
  // Group {7}: size 1 -> 0.
  std::vector<double> scores{1, 2, 3, 6, 7};
  std::vector<index_t> offsets{0, 4, 5};
  auto layout = rlcore::padded_unmasked(5, 2);
  std::vector<double> adv(10);
  rlcore::rloo_advantages(layout, scores, rlcore::group_offsets(offsets),
                          rlcore::make_matrix_view(adv.data(), 5, 2));
  CHECK(adv[0] == doctest::Approx(-8.0 / 3.0));
  CHECK(adv[1] == doctest::Approx(-8.0 / 3.0));
  CHECK(adv[2] == doctest::Approx(-4.0 / 3.0));
  CHECK(adv[4] == doctest::Approx(0.0));
  CHECK(adv[6] == doctest::Approx(4.0));
  CHECK(adv[8] == 0.0);
  CHECK(adv[9] == 0.0);
}

TEST_CASE("OPO: length-weighted baseline from the layout's valid tokens") {
  // Packed: sequence 0 has 2 slots, 1 valid; sequence 1 has 3 valid. n = {1, 3}, s = {1, 3}:
  // b = (1 * 1 + 3 * 3) / 4 = 2.5, a = {-1.5, 0.5}. Sequence 2 (group 2) is all masked: 0.
  std::vector<int> offsets{0, 2, 5, 6};
  std::vector<float> mask{0, 1, 1, 1, 1, 0};
  auto layout = rlcore::packed(offsets, mask);
  std::vector<double> scores{1, 3, 9};
  std::vector<index_t> groups{0, 2, 3};
  std::vector<double> adv(6, 42.0);
  rlcore::opo_advantages(layout, scores, rlcore::group_offsets(groups), adv);
  CHECK(adv == std::vector<double>{0, -1.5, 0.5, 0.5, 0.5, 0});
}

TEST_CASE("pass@k: only the best response (first on ties) gets s_max - s_second") {
  // Group {1, 3, 2, 0}: best index 1, second 2, gap 1; unbiased std of the group: mean 1.5,
  // var (0.25 + 2.25 + 0.25 + 2.25) / 3 = 5 / 3. Group {4, 4}: tie, the first gets 4 - 4 = 0.
  std::vector<double> scores{1, 3, 2, 0, 4, 4};
  std::vector<index_t> offsets{0, 4, 6};
  auto layout = rlcore::padded_unmasked(6, 1);
  std::vector<double> adv(6, 42.0);
  rlcore::pass_at_k_advantages(layout, scores, rlcore::group_offsets(offsets),
                               rlcore::make_matrix_view(adv.data(), 6, 1));
  CHECK(adv[0] == 0.0);
  CHECK(adv[1] == doctest::Approx(1.0 / (std::sqrt(5.0 / 3.0) + eps)));
  CHECK(adv[2] == 0.0);
  CHECK(adv[3] == 0.0);
  CHECK(adv[4] == 0.0);
  CHECK(adv[5] == 0.0);

  rlcore::pass_at_k_options options;
  options.divide_by_std = false;
  std::vector<double> scores2{1, 3, 2, 0, 5, 4};
  rlcore::pass_at_k_advantages(layout, scores2, rlcore::group_offsets(offsets),
                               rlcore::make_matrix_view(adv.data(), 6, 1), options);
  CHECK(adv[1] == 1.0);
  CHECK(adv[4] == 1.0);
  CHECK(adv[5] == 0.0);
}
