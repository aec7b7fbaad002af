// Reward utilities: weighted sums, GDPO's decoupled normalisation, the NaN policy, DAPO overlong
// shaping, the zero-spread group filter and the truncated-response mask (hand values and every
// validation rule).
#include "helpers.hpp"

#include <rlcore/advantage/reward.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

using rlcore::index_t;
using rlcore_test::check_invalid;

namespace {
const double nan_value = std::nan("");
} // namespace

TEST_CASE("weighted reward sum and the NaN policy") {
  // Rows {1, 0.5}, {0, 1}, {NaN, 2}; weights {2, -1}: 2 - 0.5 = 1.5, -1, and for the NaN row
  // either an error or (skip_column) -2.
  std::vector<double> columns{1, 0.5, 0, 1, nan_value, 2};
  auto c = rlcore::make_matrix_view(columns.data(), 3, 2);
  std::vector<double> w{2, -1};
  std::vector<float> out(3);
  check_invalid([&] { rlcore::weighted_reward_sum(c, w, out); }, "reward_columns",
                "rlcore::weighted_reward_sum: argument 'reward_columns': expected no missing (NaN) "
                "reward under nan_policy::error, got 1 NaN entry");
  rlcore::weighted_reward_sum(c, w, out, {rlcore::nan_policy::skip_column});
  CHECK(out == std::vector<float>{1.5f, -1.0f, -2.0f});
  columns[4] = 3; // no NaN: the default policy passes
  rlcore::weighted_reward_sum(c, w, out);
  CHECK(out[2] == 4.0f);
}

TEST_CASE("GDPO: per-group per-column standardisation, weighted sum, batch standardisation") {
  // G = 2. Column 0 = {1, 0 | 1, 1}, column 1 = {0.4, 0.2 | 0.5, 0.5}, weights {1, 1}.
  // Group 0, column 0: mean 0.5, unbiased std sqrt(0.5): +-0.5 / (sqrt(0.5) + eps).
  //          column 1: mean 0.3, unbiased std sqrt(0.02): +-0.1 / (sqrt(0.02) + eps).
  // Group 1: both columns constant -> 0. So A = {a, -a, 0, 0} with a the sum of the two terms;
  // batch stage: mean 0, unbiased std sqrt(2 a^2 / 3).
  const double eps = 1e-6;
  std::vector<double> columns{1, 0.4, 0, 0.2, 1, 0.5, 1, 0.5};
  auto c = rlcore::make_matrix_view(columns.data(), 4, 2);
  std::vector<double> w{1, 1}, out(4);
  const double a = 0.5 / (std::sqrt(0.5) + eps) + 0.1 / (std::sqrt(0.02) + eps);
  rlcore::normalized_reward_sum_options o;
  o.normalize_batch = false;
  rlcore::normalized_reward_sum(c, w, rlcore::uniform_groups{2}, out, o);
  CHECK(out[0] == doctest::Approx(a));
  CHECK(out[1] == doctest::Approx(-a));
  CHECK(out[2] == 0.0);
  CHECK(out[3] == 0.0);
  rlcore::normalized_reward_sum(c, w, rlcore::uniform_groups{2}, out);
  const double sd = std::sqrt(2.0 * a * a / 3.0);
  CHECK(out[0] == doctest::Approx(a / (sd + eps)));
  CHECK(out[3] == doctest::Approx(0.0));

  // Weights {2, 0}: only column 0 counts, doubled.
  std::vector<double> w2{2, 0};
  rlcore::normalized_reward_sum(c, w2, rlcore::uniform_groups{2}, out, o);
  CHECK(out[0] == doctest::Approx(1.0 / (std::sqrt(0.5) + eps)));

  // skip_column: row 1's column 1 is missing, so group 0's column 1 has one present value (0)
  // and row 1 gets only its column-0 term.
  columns[3] = nan_value;
  o.nan_policy = rlcore::nan_policy::skip_column;
  rlcore::normalized_reward_sum(c, w, rlcore::uniform_groups{2}, out, o);
  CHECK(out[0] == doctest::Approx(0.5 / (std::sqrt(0.5) + eps)));
  CHECK(out[1] == doctest::Approx(-0.5 / (std::sqrt(0.5) + eps)));
  check_invalid([&] { rlcore::normalized_reward_sum(c, w, rlcore::uniform_groups{2}, out); },
                "reward_columns", "got 1 NaN entry");
}

TEST_CASE("DAPO overlong penalty: 0, linear to -1, then -1") {
  // Lmax 10, Lcache 4: soft zone (6, 10]. L = 5, 6 -> 0; 8 -> (6 - 8) / 4 = -0.5; 9 -> -0.75;
  // 10 -> -1; 11 -> -1.
  std::vector<int> lengths{5, 6, 8, 9, 10, 11};
  std::vector<double> p(6);
  rlcore::dapo_overlong_penalty(lengths, 10, 4, p);
  CHECK(p == std::vector<double>{0, 0, -0.5, -0.75, -1, -1});
  rlcore::dapo_overlong_penalty(lengths, 10, 0, p); // hard cut
  CHECK(p == std::vector<double>{0, 0, 0, 0, 0, -1});
}

TEST_CASE("zero-spread group filter (dynamic sampling)") {
  // Groups {1, 1} (flag), {0, 1}, {} (empty: not flagged), {2, 2} (flag), {5} (size 1: flag).
  std::vector<double> scores{1, 1, 0, 1, 2, 2, 5};
  std::vector<index_t> offsets{0, 2, 4, 4, 6, 7};
  std::vector<std::uint8_t> flags(5, 9);
  const index_t n = rlcore::zero_spread_groups(scores, rlcore::group_offsets(offsets), flags);
  CHECK(n == 3);
  CHECK(flags == std::vector<std::uint8_t>{1, 0, 0, 1, 1});
}

TEST_CASE("truncated-response mask") {
  // lengths {3, 2, 5}, max 3: sequences 0 and 2 are truncated; sequence 1 keeps its valid tokens.
  std::vector<std::uint8_t> mask{1, 1, 1, 1, 0, 1, 1, 1, 1};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 3, 3));
  std::vector<long> lengths{3, 2, 5};
  std::vector<float> out(9, 7.0f);
  const index_t truncated = rlcore::truncated_response_mask(
      layout, lengths, 3, rlcore::make_matrix_view(out.data(), 3, 3));
  CHECK(truncated == 2);
  CHECK(out == std::vector<float>{0, 0, 0, 1, 0, 1, 0, 0, 0});
}

TEST_CASE("reward utilities: validation messages") {
  std::vector<double> columns(6, 1.0), w{1, 1}, w3{1, 1, 1}, out(3), out4(4);
  auto c = rlcore::make_matrix_view(columns.data(), 3, 2);
  check_invalid([&] { rlcore::weighted_reward_sum(c, w3, out); }, "weights",
                "expected K = 2 entries (one per reward column), got 3");
  check_invalid([&] { rlcore::weighted_reward_sum(c, w, out4); }, "rewards_out",
                "expected N = 3 entries (one per sequence), got 4");
  check_invalid(
      [&] { rlcore::weighted_reward_sum(c, w, out, {static_cast<rlcore::nan_policy>(4)}); },
      "options.nan_policy", "expected error or skip_column, got 4");
  check_invalid([&] { rlcore::normalized_reward_sum(c, w, rlcore::uniform_groups{2}, out); },
                "groups", "group size G = 2 does not divide the number of sequences N = 3");
  rlcore::normalized_reward_sum_options o;
  o.eps = 0;
  check_invalid([&] { rlcore::normalized_reward_sum(c, w, rlcore::uniform_groups{3}, out, o); },
                "options.eps", "expected a finite value > 0, got 0");
  check_invalid([&] { rlcore::normalized_reward_sum(c, w3, rlcore::uniform_groups{3}, out); },
                "weights", "expected K = 2");

  std::vector<int> lengths{1, 2, 3};
  check_invalid(
      [&] { rlcore::dapo_overlong_penalty(lengths, 0, 0, out); }, "max_length",
      "rlcore::dapo_overlong_penalty: argument 'max_length': expected a value > 0, got 0");
  check_invalid([&] { rlcore::dapo_overlong_penalty(lengths, 10, 11, out); }, "cache_length",
                "expected a value in [0, max_length = 10], got 11");
  check_invalid([&] { rlcore::dapo_overlong_penalty(lengths, 10, -1, out); }, "cache_length",
                "got -1");
  check_invalid([&] { rlcore::dapo_overlong_penalty(lengths, 10, 2, out4); }, "penalties_out",
                "expected N = 3 entries");

  std::vector<float> flags(2);
  check_invalid([&] { rlcore::zero_spread_groups(out, rlcore::uniform_groups{1}, flags); },
                "flags_out", "expected 3 entries (one per group), got 2");
  check_invalid([&] { rlcore::zero_spread_groups(out, rlcore::uniform_groups{2}, flags); },
                "groups", "does not divide");

  auto layout = rlcore::padded_unmasked(3, 2);
  std::vector<double> mask_out(6), wrong(4);
  check_invalid(
      [&] {
        rlcore::truncated_response_mask(layout, w, 3,
                                        rlcore::make_matrix_view(mask_out.data(), 3, 2));
      },
      "lengths", "expected N = 3 entries (one per sequence), got 2");
  check_invalid(
      [&] {
        rlcore::truncated_response_mask(layout, lengths, 0,
                                        rlcore::make_matrix_view(mask_out.data(), 3, 2));
      },
      "max_length", "expected a value > 0, got 0");
  check_invalid(
      [&] {
        rlcore::truncated_response_mask(layout, lengths, 3,
                                        rlcore::make_matrix_view(wrong.data(), 2, 2));
      },
      "mask_out", "expected shape (3, 2) to match the mask, got (2, 2)");
}
