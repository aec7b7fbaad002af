// Token-level estimators (GAE, REINFORCE++, baseline, ReMax, GRPO process, whitening, sequence
// scores) on small cases worked out by hand in the comments.
#include <rlcore/advantage/all.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

using rlcore::index_t;

TEST_CASE("sequence scores sum the valid tokens only") {
  std::vector<std::uint8_t> mask{1, 0, 1, 0, 0, 0};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 3));
  const double nan = std::nan("");
  std::vector<double> rewards{1.5, nan, 2.0, nan, 7.0, 7.0}; // masked NaN never read
  std::vector<float> scores(2, 42.0f);
  rlcore::sequence_scores(layout, rlcore::make_matrix_view(rewards.data(), 2, 3), scores);
  CHECK(scores[0] == 3.5f);
  CHECK(scores[1] == 0.0f);
}

TEST_CASE("whiten: unbiased, population, mean-only by hand") {
  // Valid x = {1, 2, 3, 4, 2.5} (the 9 is masked): mean 12.5 / 5 = 2.5, squared deviations
  // 2.25 + 0.25 + 0.25 + 2.25 + 0 = 5, unbiased var 5 / 4, population var 1.
  std::vector<std::uint8_t> mask{1, 1, 0, 1, 1, 1};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 3));
  const std::vector<double> x{1, 2, 9, 3, 4, 2.5};
  std::vector<double> y = x;
  rlcore::whiten(layout, rlcore::make_matrix_view(y.data(), 2, 3));
  CHECK(y[0] == doctest::Approx(-1.5 / std::sqrt(1.25 + 1e-8)));
  CHECK(y[2] == 0.0); // masked -> 0
  CHECK(y[5] == doctest::Approx(0.0));
  y = x;
  rlcore::whiten(layout, rlcore::make_matrix_view(y.data(), 2, 3),
                 {rlcore::whiten_kind::population, 1e-8});
  CHECK(y[4] == doctest::Approx(1.5 / std::sqrt(1.0 + 1e-8)));
  y = x;
  rlcore::whiten(layout, rlcore::make_matrix_view(y.data(), 2, 3),
                 {rlcore::whiten_kind::mean_only, 1e-8});
  CHECK(y[1] == doctest::Approx(-0.5));
  CHECK(y[3] == doctest::Approx(0.5));
}

TEST_CASE("whiten: identical values give exactly 0; one valid token (population) gives 0") {
  std::vector<double> x(7, 0.1);
  auto layout = rlcore::padded_unmasked(1, 7);
  rlcore::whiten(layout, rlcore::make_matrix_view(x.data(), 1, 7));
  for (double v : x) {
    CHECK(v == 0.0);
  }
  std::vector<double> one{5.0};
  rlcore::whiten(rlcore::padded_unmasked(1, 1), rlcore::make_matrix_view(one.data(), 1, 1),
                 {rlcore::whiten_kind::population, 1e-8});
  CHECK(one[0] == 0.0);
}

TEST_CASE_TEMPLATE("GAE by hand, with a masked observation token inside the row", T, float,
                   double) {
  // Row 0: slots {valid, masked, valid}, r = {1, 100, 2}, V = {0.5, 99, 1}, gamma 0.9, lambda 0.8.
  //   t = 2: V_next = 0, delta = 2 - 1 = 1, A = 1, return 2.
  //   t = 1: masked, carries pass, outputs 0.
  //   t = 0: V_next = V_2 = 1, delta = 1 + 0.9 - 0.5 = 1.4, A = 1.4 + 0.72 * 1 = 2.12,
  //          return 2.62.
  // Row 1: all valid, r = {0, 0, 1}, V = {0, 0, 0}, gamma 0.9, lambda 0.8:
  //   t = 2: A = 1; t = 1: delta 0, A = 0.72; t = 0: A = 0.5184.
  std::vector<std::uint8_t> mask{1, 0, 1, 1, 1, 1};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 3));
  std::vector<T> r{1, 100, 2, 0, 0, 1};
  std::vector<T> v{0.5, 99, 1, 0, 0, 0};
  std::vector<T> adv(6, T(42)), ret(6, T(42));
  rlcore::gae_options options;
  options.gamma = 0.9;
  options.lambda = 0.8;
  rlcore::gae_advantages(layout, rlcore::make_matrix_view(r.data(), 2, 3),
                         rlcore::make_matrix_view(v.data(), 2, 3),
                         rlcore::make_matrix_view(adv.data(), 2, 3),
                         rlcore::make_matrix_view(ret.data(), 2, 3), options);
  CHECK(adv[0] == doctest::Approx(2.12));
  CHECK(adv[1] == T(0));
  CHECK(adv[2] == doctest::Approx(1.0));
  CHECK(ret[0] == doctest::Approx(2.62));
  CHECK(ret[1] == T(0));
  CHECK(ret[2] == doctest::Approx(2.0));
  CHECK(adv[3] == doctest::Approx(0.5184));
  CHECK(adv[4] == doctest::Approx(0.72));
  CHECK(adv[5] == doctest::Approx(1.0));
}

TEST_CASE("GAE: the masked token is skipped, not an end (pitfall 1)") {
  // The padded row {a, masked, b} must equal the packed row {a, b} without the masked token.
  std::vector<std::uint8_t> mask{1, 1, 0, 0, 1, 1, 0, 1};
  auto padded = rlcore::padded(rlcore::make_matrix_view(mask.data(), 1, 8));
  std::vector<double> r{0.3, -1, 9, 9, 0.5, 2, 9, 1};
  std::vector<double> v{0.1, 0.4, 9, 9, -0.2, 0.3, 9, 0.7};
  std::vector<double> adv(8), ret(8);
  rlcore::gae_options options{0.95, 0.9};
  rlcore::gae_advantages(padded, rlcore::make_matrix_view(r.data(), 1, 8),
                         rlcore::make_matrix_view(v.data(), 1, 8),
                         rlcore::make_matrix_view(adv.data(), 1, 8),
                         rlcore::make_matrix_view(ret.data(), 1, 8), options);
  std::vector<index_t> offsets{0, 5};
  auto packed = rlcore::packed(offsets);
  std::vector<double> r2{0.3, -1, 0.5, 2, 1}, v2{0.1, 0.4, -0.2, 0.3, 0.7}, adv2(5), ret2(5);
  rlcore::gae_advantages(packed, r2, v2, adv2, ret2, options);
  const int valid[] = {0, 1, 4, 5, 7};
  for (int k = 0; k < 5; ++k) {
    CHECK(adv[valid[k]] == doctest::Approx(adv2[k]).epsilon(1e-14));
    CHECK(ret[valid[k]] == doctest::Approx(ret2[k]).epsilon(1e-14));
  }
  // And the reference recurrence, written out: last token A = 1 - 0.7 = 0.3.
  CHECK(adv2[4] == doctest::Approx(0.3));
  // t = 3: delta = 2 + 0.95 * 0.7 - 0.3 = 2.365, A = 2.365 + 0.855 * 0.3 = 2.6215.
  CHECK(adv2[3] == doctest::Approx(2.6215));
}

TEST_CASE("REINFORCE++: discounted returns through a masked token, then whitening") {
  // Row 0: {r 0, masked 50, r 1}, gamma 0.5: G_2 = 1, G_0 = 0 + 0.5 * 1 = 0.5.
  // Row 1: {r 1, r 0, r 0}: G = {1, 0, 0}.
  // Valid returns {0.5, 1, 1, 0, 0}: mean 0.5, squared deviations 0 + .25 + .25 + .25 + .25 = 1,
  // unbiased var 1 / 4.
  std::vector<std::uint8_t> mask{1, 0, 1, 1, 1, 1};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 3));
  std::vector<double> r{0, 50, 1, 1, 0, 0}, adv(6, 42), ret(6, 42);
  rlcore::reinforce_options options;
  options.gamma = 0.5;
  rlcore::reinforce_plus_plus_advantages(layout, rlcore::make_matrix_view(r.data(), 2, 3),
                                         rlcore::make_matrix_view(adv.data(), 2, 3),
                                         rlcore::make_matrix_view(ret.data(), 2, 3), options);
  CHECK(ret == std::vector<double>{0.5, 0, 1, 1, 0, 0});
  const double s = std::sqrt(0.25 + 1e-8);
  CHECK(adv[0] == doctest::Approx(0.0));
  CHECK(adv[1] == 0.0);
  CHECK(adv[2] == doctest::Approx(0.5 / s));
  CHECK(adv[4] == doctest::Approx(-0.5 / s));
  options.whiten_kind = rlcore::whiten_kind::none;
  rlcore::reinforce_plus_plus_advantages(layout, rlcore::make_matrix_view(r.data(), 2, 3),
                                         rlcore::make_matrix_view(adv.data(), 2, 3),
                                         rlcore::make_matrix_view(ret.data(), 2, 3), options);
  CHECK(adv == ret);
}

TEST_CASE("REINFORCE++ baseline: the group mean of s_i enters at the last valid token") {
  // Group of 2. Row 0: {0, 1}, s = 1. Row 1: {0 valid, 0 masked}, s = 0. b = 0.5.
  // gamma 1, no whitening: row 0 returns {1 - 0.5, 1 - 0.5}; row 1: last valid is t = 0:
  // {-0.5, 0 (masked)}.
  std::vector<std::uint8_t> mask{1, 1, 1, 0};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 2));
  std::vector<double> r{0, 1, 0, 0}, adv(4, 42);
  rlcore::reinforce_options options;
  options.whiten_kind = rlcore::whiten_kind::none;
  rlcore::reinforce_plus_plus_baseline_advantages(
      layout, rlcore::make_matrix_view(r.data(), 2, 2), rlcore::uniform_groups{2},
      rlcore::make_matrix_view(adv.data(), 2, 2), options);
  CHECK(adv == std::vector<double>{0.5, 0.5, -0.5, 0});
  // gamma 0.5: row 0: t = 1: 1 - 0.5 = 0.5, t = 0: 0 + 0.5 * 0.5 = 0.25.
  options.gamma = 0.5;
  rlcore::reinforce_plus_plus_baseline_advantages(
      layout, rlcore::make_matrix_view(r.data(), 2, 2), rlcore::uniform_groups{2},
      rlcore::make_matrix_view(adv.data(), 2, 2), options);
  CHECK(adv == std::vector<double>{0.25, 0.5, -0.5, 0});
  // Default whitening (unbiased) of {0.25, 0.5, -0.5}: mean 1/12, ...
  options = {};
  rlcore::reinforce_plus_plus_baseline_advantages(
      layout, rlcore::make_matrix_view(r.data(), 2, 2), rlcore::uniform_groups{2},
      rlcore::make_matrix_view(adv.data(), 2, 2), options);
  // gamma 1 values {0.5, 0.5, -0.5}: mean 1/6, deviations {1/3, 1/3, -2/3}, sum of squares 2/3,
  // unbiased var 1/3.
  const double s = std::sqrt(1.0 / 3.0 + 1e-8);
  CHECK(adv[0] == doctest::Approx((1.0 / 3.0) / s));
  CHECK(adv[2] == doctest::Approx((-2.0 / 3.0) / s));
  CHECK(adv[3] == 0.0);
}

TEST_CASE("ReMax: return-to-go minus the greedy baseline") {
  // Row {0, 0, 1}, b = 0.25, gamma 1: 0.75 everywhere. gamma 0.5: {0.1875, 0.375, 0.75}.
  auto layout = rlcore::padded_unmasked(1, 3);
  std::vector<double> r{0, 0, 1}, b{0.25}, adv(3);
  rlcore::remax_advantages(layout, rlcore::make_matrix_view(r.data(), 1, 3), b,
                           rlcore::make_matrix_view(adv.data(), 1, 3));
  CHECK(adv == std::vector<double>{0.75, 0.75, 0.75});
  rlcore::remax_options options;
  options.gamma = 0.5;
  rlcore::remax_advantages(layout, rlcore::make_matrix_view(r.data(), 1, 3), b,
                           rlcore::make_matrix_view(adv.data(), 1, 3), options);
  CHECK(adv == std::vector<double>{0.1875, 0.375, 0.75});
}

TEST_CASE("GRPO process supervision by hand") {
  // One group of 2 responses, 4 tokens each. Row 0: steps end at t = 1 (r 1) and t = 3 (r 0).
  // Row 1: one step ending at t = 2 (r 2); its last token is masked.
  // R_g = {1, 0, 2}: mean 1, unbiased std 1, r~ = {0, -1, 1} / (1 + 1e-6).
  // Row 0: A = {r~1 + r~3, r~1 + r~3, r~3, r~3} = {-c, -c, -c, -c}, c = 1 / (1 + 1e-6).
  // Row 1: A = {c, c, c, 0 (masked)}.
  std::vector<std::uint8_t> mask{1, 1, 1, 1, 1, 1, 1, 0};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 4));
  std::vector<double> r{0, 1, 0, 0, 0, 0, 2, 0};
  std::vector<int> ends{0, 1, 0, 1, 0, 0, 1, 0};
  std::vector<double> adv(8, 42);
  rlcore::grpo_process_advantages(
      layout, rlcore::make_matrix_view(r.data(), 2, 4), rlcore::make_matrix_view(ends.data(), 2, 4),
      rlcore::uniform_groups{2}, rlcore::make_matrix_view(adv.data(), 2, 4));
  const double c = 1.0 / (1.0 + 1e-6);
  for (int t = 0; t < 4; ++t) {
    CHECK(adv[t] == doctest::Approx(-c));
  }
  CHECK(adv[4] == doctest::Approx(c));
  CHECK(adv[6] == doctest::Approx(c));
  CHECK(adv[7] == 0.0);
}

TEST_CASE("GRPO process from step lists equals the dense form (padded and packed)") {
  // The hand case above as lists: row 0 steps at t = 1 (r 1) and t = 3 (r 0); row 1 at t = 2
  // (r 2).
  std::vector<std::uint8_t> mask{1, 1, 1, 1, 1, 1, 1, 0};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 4));
  std::vector<int> step_offsets{0, 2, 3};
  std::vector<int> positions{1, 3, 2};
  std::vector<double> values{1, 0, 2};
  std::vector<double> adv(8, 42);
  rlcore::grpo_process_advantages_from_steps(layout, step_offsets, positions, values,
                                             rlcore::uniform_groups{2},
                                             rlcore::make_matrix_view(adv.data(), 2, 4));
  const double c = 1.0 / (1.0 + 1e-6);
  CHECK(adv[0] == doctest::Approx(-c));
  CHECK(adv[3] == doctest::Approx(-c));
  CHECK(adv[4] == doctest::Approx(c));
  CHECK(adv[7] == 0.0);

  // Packed, rows of lengths 4 and 3, the same steps: identical values at the same tokens.
  std::vector<index_t> offsets{0, 4, 7};
  auto packed = rlcore::packed(offsets);
  std::vector<double> flat(7, 42);
  rlcore::grpo_process_advantages_from_steps(packed, step_offsets, positions, values,
                                             rlcore::uniform_groups{2}, flat);
  for (int k = 0; k < 7; ++k) {
    CHECK(flat[static_cast<size_t>(k)] == adv[static_cast<size_t>(k)]);
  }
}
