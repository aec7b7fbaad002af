// Properties of the estimators on random batches: padded and packed layouts agree bit for bit,
// permuting sequences inside a group permutes the advantages, float agrees with double to float
// precision, GAE limits (lambda = 1: Monte Carlo; lambda = 0: TD error), whitened tokens have
// mean 0 and variance 1, and extreme rewards (1e30, identical, G = 1) stay finite.
#include <rlcore/advantage/all.hpp>
#include <rlcore/backend/eigen/eigen.hpp>
#include <rlcore/rlcore.hpp>

#include <Eigen/Core>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

using rlcore::index_t;

namespace {

// A random batch of N sequences: lengths in [0, T], interior holes in the mask, then padding.
struct random_batch {
  index_t n = 0;
  index_t cols = 0;
  std::vector<index_t> lengths;
  std::vector<std::uint8_t> padded_mask; // n x cols
  std::vector<index_t> offsets;          // n + 1
  std::vector<std::uint8_t> packed_mask; // offsets[n]
  std::vector<double> rewards, values;   // n x cols (padded), garbage at masked slots
  std::vector<double> packed_rewards, packed_values;

  random_batch(index_t rows, index_t max_len, unsigned seed) : n(rows), cols(max_len) {
    std::mt19937 gen(seed);
    std::uniform_int_distribution<index_t> len_dist(0, max_len);
    std::uniform_real_distribution<double> val(-2.0, 2.0);
    std::bernoulli_distribution hole(0.2);
    padded_mask.assign(static_cast<size_t>(n * cols), 0);
    rewards.assign(static_cast<size_t>(n * cols), 1e6); // masked garbage: never read
    values.assign(static_cast<size_t>(n * cols), -1e6);
    offsets.push_back(0);
    for (index_t i = 0; i < n; ++i) {
      const index_t len = i == 0 ? 0 : len_dist(gen); // row 0 empty: an all-masked row
      lengths.push_back(len);
      for (index_t t = 0; t < len; ++t) {
        const std::uint8_t m = hole(gen) ? 0 : 1;
        const double r = val(gen), v = val(gen);
        padded_mask[static_cast<size_t>(i * cols + t)] = m;
        rewards[static_cast<size_t>(i * cols + t)] = m ? r : 1e6;
        values[static_cast<size_t>(i * cols + t)] = m ? v : -1e6;
        packed_mask.push_back(m);
        packed_rewards.push_back(m ? r : 1e6);
        packed_values.push_back(m ? v : -1e6);
      }
      offsets.push_back(offsets.back() + len);
    }
  }
  auto padded() const {
    return rlcore::padded(rlcore::make_matrix_view(padded_mask.data(), n, cols));
  }
  auto packed() const { return rlcore::packed(offsets, packed_mask); }
  template <class T>
  auto mat(std::vector<T>& x) const {
    return rlcore::make_matrix_view(x.data(), n, cols);
  }
  template <class T>
  auto mat(const std::vector<T>& x) const {
    return rlcore::make_matrix_view(x.data(), n, cols);
  }
  // Checks padded (n x cols) == packed (flat) at every slot of the rows, and padding is 0.
  void check_same(const std::vector<double>& pad, const std::vector<double>& pack) const {
    for (index_t i = 0; i < n; ++i) {
      for (index_t t = 0; t < cols; ++t) {
        const double p = pad[static_cast<size_t>(i * cols + t)];
        if (t < lengths[static_cast<size_t>(i)]) {
          CHECK(p == pack[static_cast<size_t>(offsets[static_cast<size_t>(i)] + t)]);
        } else {
          CHECK(p == 0.0);
        }
      }
    }
  }
};

std::vector<double> random_scores(index_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(0, 4); // ties happen
  std::vector<double> s(static_cast<size_t>(n));
  for (auto& x : s) {
    x = d(gen) * 0.25;
  }
  return s;
}

} // namespace

TEST_CASE("padded and packed layouts give identical results for every estimator") {
  const random_batch b(12, 9, 7);
  const auto pad = b.padded();
  const auto pack = b.packed();
  const size_t slots = b.padded_mask.size();
  const size_t flat = b.packed_rewards.size();
  const auto scores = random_scores(b.n, 3);
  const rlcore::uniform_groups groups{4};
  std::vector<double> a1(slots, 42), r1(slots, 42), a2(flat, 42), r2(flat, 42);

  SUBCASE("GRPO") {
    rlcore::grpo_outcome_advantages(pad, scores, groups, b.mat(a1));
    rlcore::grpo_outcome_advantages(pack, scores, groups, a2);
    b.check_same(a1, a2);
  }
  SUBCASE("RLOO") {
    rlcore::rloo_advantages(pad, scores, groups, b.mat(a1));
    rlcore::rloo_advantages(pack, scores, groups, a2);
    b.check_same(a1, a2);
  }
  SUBCASE("OPO") {
    rlcore::opo_advantages(pad, scores, groups, b.mat(a1));
    rlcore::opo_advantages(pack, scores, groups, a2);
    b.check_same(a1, a2);
  }
  SUBCASE("pass@k") {
    rlcore::pass_at_k_advantages(pad, scores, groups, b.mat(a1));
    rlcore::pass_at_k_advantages(pack, scores, groups, a2);
    b.check_same(a1, a2);
  }
  SUBCASE("GAE, whitened") {
    rlcore::gae_options o{0.97, 0.9, true};
    rlcore::gae_advantages(pad, b.mat(b.rewards), b.mat(b.values), b.mat(a1), b.mat(r1), o);
    rlcore::gae_advantages(pack, b.packed_rewards, b.packed_values, a2, r2, o);
    b.check_same(a1, a2);
    b.check_same(r1, r2);
  }
  SUBCASE("REINFORCE++, baseline, ReMax") {
    rlcore::reinforce_options o;
    o.gamma = 0.9;
    rlcore::reinforce_plus_plus_advantages(pad, b.mat(b.rewards), b.mat(a1), b.mat(r1), o);
    rlcore::reinforce_plus_plus_advantages(pack, b.packed_rewards, a2, r2, o);
    b.check_same(a1, a2);
    b.check_same(r1, r2);
    rlcore::reinforce_plus_plus_baseline_advantages(pad, b.mat(b.rewards), groups, b.mat(a1), o);
    rlcore::reinforce_plus_plus_baseline_advantages(pack, b.packed_rewards, groups, a2, o);
    b.check_same(a1, a2);
    rlcore::remax_advantages(pad, b.mat(b.rewards), scores, b.mat(a1));
    rlcore::remax_advantages(pack, b.packed_rewards, scores, a2);
    b.check_same(a1, a2);
  }
  SUBCASE("GRPO process") {
    // step ends where the (valid) reward is positive
    std::vector<double> ends_pad(slots), ends_pack(flat);
    for (size_t k = 0; k < slots; ++k) {
      ends_pad[k] = b.rewards[k] > 0.5 && b.rewards[k] < 1e5 ? 1.0 : 0.0;
    }
    for (size_t k = 0; k < flat; ++k) {
      ends_pack[k] = b.packed_rewards[k] > 0.5 && b.packed_rewards[k] < 1e5 ? 1.0 : 0.0;
    }
    rlcore::grpo_process_advantages(pad, b.mat(b.rewards), b.mat(ends_pad), groups, b.mat(a1));
    rlcore::grpo_process_advantages(pack, b.packed_rewards, ends_pack, groups, a2);
    b.check_same(a1, a2);
  }
  SUBCASE("sequence scores and whitening") {
    std::vector<double> s1(static_cast<size_t>(b.n)), s2(static_cast<size_t>(b.n));
    rlcore::sequence_scores(pad, b.mat(b.rewards), s1);
    rlcore::sequence_scores(pack, b.packed_rewards, s2);
    CHECK(s1 == s2);
    a1 = b.rewards;
    a2 = b.packed_rewards;
    rlcore::whiten(pad, b.mat(a1));
    rlcore::whiten(pack, a2);
    b.check_same(a1, a2);
  }
}

TEST_CASE("permuting sequences inside a group permutes the advantages") {
  // Group 0 = sequences 0..3, group 1 = 4..7; the permutation reverses group 0 and rotates group 1.
  const std::vector<index_t> perm{3, 2, 1, 0, 5, 6, 7, 4};
  const std::vector<double> scores{0.5, 1.0, 0.0, 0.25, 1.0, 0.75, 0.0, 0.125};
  std::vector<double> permuted(8);
  for (size_t k = 0; k < 8; ++k) {
    permuted[k] = scores[static_cast<size_t>(perm[k])];
  }
  // Rows of different valid lengths (OPO weights them): lengths 1..3 by sequence.
  const index_t cols = 3;
  std::vector<std::uint8_t> mask(24, 0), pmask(24, 0);
  for (index_t i = 0; i < 8; ++i) {
    for (index_t t = 0; t < 1 + i % 3; ++t) {
      mask[static_cast<size_t>(i * cols + t)] = 1;
    }
  }
  for (index_t k = 0; k < 8; ++k) {
    for (index_t t = 0; t < cols; ++t) {
      pmask[static_cast<size_t>(k * cols + t)] =
          mask[static_cast<size_t>(perm[static_cast<size_t>(k)] * cols + t)];
    }
  }
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 8, cols));
  auto playout = rlcore::padded(rlcore::make_matrix_view(pmask.data(), 8, cols));
  const rlcore::uniform_groups groups{4};
  std::vector<double> a(24), pa(24);
  auto check_permuted = [&] {
    for (index_t k = 0; k < 8; ++k) {
      for (index_t t = 0; t < cols; ++t) {
        CHECK(pa[static_cast<size_t>(k * cols + t)]
              == doctest::Approx(a[static_cast<size_t>(perm[static_cast<size_t>(k)] * cols + t)])
                     .epsilon(1e-12));
      }
    }
  };
  rlcore::grpo_outcome_advantages(layout, scores, groups,
                                  rlcore::make_matrix_view(a.data(), 8, cols));
  rlcore::grpo_outcome_advantages(playout, permuted, groups,
                                  rlcore::make_matrix_view(pa.data(), 8, cols));
  check_permuted();
  rlcore::rloo_advantages(layout, scores, groups, rlcore::make_matrix_view(a.data(), 8, cols));
  rlcore::rloo_advantages(playout, permuted, groups, rlcore::make_matrix_view(pa.data(), 8, cols));
  check_permuted();
  rlcore::opo_advantages(layout, scores, groups, rlcore::make_matrix_view(a.data(), 8, cols));
  rlcore::opo_advantages(playout, permuted, groups, rlcore::make_matrix_view(pa.data(), 8, cols));
  check_permuted();
  // pass@k with distinct maxima (ties would move "the first")
  rlcore::pass_at_k_advantages(layout, scores, groups, rlcore::make_matrix_view(a.data(), 8, cols));
  rlcore::pass_at_k_advantages(playout, permuted, groups,
                               rlcore::make_matrix_view(pa.data(), 8, cols));
  check_permuted();
}

TEST_CASE("float and double agree to float precision") {
  const random_batch b(16, 12, 11);
  const auto pad = b.padded();
  std::vector<float> rf(b.rewards.begin(), b.rewards.end()), vf(b.values.begin(), b.values.end());
  std::vector<float> af(rf.size()), retf(rf.size());
  std::vector<double> ad(rf.size()), retd(rf.size());
  auto close = [&] {
    for (size_t k = 0; k < ad.size(); ++k) {
      CHECK(static_cast<double>(af[k]) == doctest::Approx(ad[k]).epsilon(1e-5).scale(1.0));
    }
  };
  rlcore::gae_options o{0.99, 0.95, true};
  rlcore::gae_advantages(pad, b.mat(rf), b.mat(vf), b.mat(af), b.mat(retf), o);
  rlcore::gae_advantages(pad, b.mat(b.rewards), b.mat(b.values), b.mat(ad), b.mat(retd), o);
  close();
  rlcore::reinforce_plus_plus_advantages(pad, b.mat(rf), b.mat(af), b.mat(retf));
  rlcore::reinforce_plus_plus_advantages(pad, b.mat(b.rewards), b.mat(ad), b.mat(retd));
  close();
  const auto scores = random_scores(b.n, 5);
  std::vector<float> sf(scores.begin(), scores.end());
  rlcore::grpo_outcome_advantages(pad, sf, rlcore::uniform_groups{4}, b.mat(af));
  rlcore::grpo_outcome_advantages(pad, scores, rlcore::uniform_groups{4}, b.mat(ad));
  close();
  rlcore::reinforce_plus_plus_baseline_advantages(pad, b.mat(rf), rlcore::uniform_groups{4},
                                                  b.mat(af));
  rlcore::reinforce_plus_plus_baseline_advantages(pad, b.mat(b.rewards), rlcore::uniform_groups{4},
                                                  b.mat(ad));
  close();
  rlcore::remax_advantages(pad, b.mat(rf), sf, b.mat(af));
  rlcore::remax_advantages(pad, b.mat(b.rewards), scores, b.mat(ad));
  close();
  rlcore::grpo_process_advantages(pad, b.mat(rf), b.mat(vf), rlcore::uniform_groups{4}, b.mat(af));
  rlcore::grpo_process_advantages(pad, b.mat(b.rewards), b.mat(b.values), rlcore::uniform_groups{4},
                                  b.mat(ad));
  close();
}

TEST_CASE("GAE limits: lambda = 1 is Monte Carlo minus V, lambda = 0 is the TD error") {
  const random_batch b(6, 10, 19);
  const auto pad = b.padded();
  std::vector<double> a(b.rewards.size()), ret(a.size());
  const double gamma = 0.9;
  rlcore::gae_advantages(pad, b.mat(b.rewards), b.mat(b.values), b.mat(a), b.mat(ret),
                         {gamma, 1.0});
  for (index_t i = 0; i < b.n; ++i) {
    double g = 0; // discounted return over valid tokens, skipping holes
    for (index_t t = b.cols - 1; t >= 0; --t) {
      const auto k = static_cast<size_t>(i * b.cols + t);
      if (b.padded_mask[k]) {
        g = b.rewards[k] + gamma * g;
        CHECK(a[k] == doctest::Approx(g - b.values[k]).epsilon(1e-12));
        CHECK(ret[k] == doctest::Approx(g).epsilon(1e-12));
      }
    }
  }
  rlcore::gae_advantages(pad, b.mat(b.rewards), b.mat(b.values), b.mat(a), b.mat(ret),
                         {gamma, 0.0});
  for (index_t i = 0; i < b.n; ++i) {
    double next_v = 0;
    for (index_t t = b.cols - 1; t >= 0; --t) {
      const auto k = static_cast<size_t>(i * b.cols + t);
      if (b.padded_mask[k]) {
        CHECK(a[k] == doctest::Approx(b.rewards[k] + gamma * next_v - b.values[k]).epsilon(1e-12));
        next_v = b.values[k];
      }
    }
  }
}

TEST_CASE("whitened tokens have mean 0 and unbiased variance 1 over the valid tokens") {
  const random_batch b(10, 10, 23);
  std::vector<double> x = b.rewards;
  rlcore::whiten(b.padded(), b.mat(x));
  double n = 0, sum = 0, sq = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    if (b.padded_mask[k]) {
      n += 1;
      sum += x[k];
    } else {
      CHECK(x[k] == 0.0);
    }
  }
  for (size_t k = 0; k < x.size(); ++k) {
    if (b.padded_mask[k]) {
      sq += (x[k] - sum / n) * (x[k] - sum / n);
    }
  }
  CHECK(sum / n == doctest::Approx(0.0).scale(1.0).epsilon(1e-12));
  CHECK(sq / (n - 1) == doctest::Approx(1.0).epsilon(1e-7));
}

TEST_CASE_TEMPLATE("extreme rewards: 1e30, identical values and G = 1 stay finite", T, float,
                   double) {
  // Scores of 1e30 / -1e30 / 0: (1e30)^2 overflows float but the moments are in double.
  const std::vector<T> scores{T(1e30), T(-1e30), T(0), T(1e30), T(7), T(7), T(7), T(7)};
  std::vector<T> out(8);
  rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{4}, out);
  for (T v : out) {
    CHECK(std::isfinite(v));
  }
  // group {1e30, -1e30, 0, 1e30}: mean 2.5e29, unbiased std = sqrt((3 * 0.5625 + 0.0625 + ...)
  // ...) computed independently here in long double.
  long double mean = (1e30L - 1e30L + 0 + 1e30L) / 4, ss = 0;
  for (int k = 0; k < 4; ++k) {
    ss += (static_cast<long double>(scores[static_cast<size_t>(k)]) - mean)
          * (static_cast<long double>(scores[static_cast<size_t>(k)]) - mean);
  }
  const double sd = static_cast<double>(std::sqrt(ss / 3));
  CHECK(static_cast<double>(out[0])
        == doctest::Approx(static_cast<double>((1e30L - mean)) / sd).epsilon(1e-5));
  CHECK(out[4] == T(0));
  CHECK(out[7] == T(0));

  // Identical huge token rewards through REINFORCE++ and GAE: finite, and whitening gives 0.
  std::vector<T> r(12, T(1e30)), v(12, T(1e30)), a(12), ret(12);
  auto layout = rlcore::padded_unmasked(3, 4);
  rlcore::reinforce_plus_plus_advantages(layout, rlcore::make_matrix_view(r.data(), 3, 4),
                                         rlcore::make_matrix_view(a.data(), 3, 4),
                                         rlcore::make_matrix_view(ret.data(), 3, 4));
  for (size_t k = 0; k < 12; ++k) {
    CHECK(std::isfinite(a[k]));
    CHECK(std::isfinite(ret[k]));
  }
  rlcore::gae_advantages(layout, rlcore::make_matrix_view(r.data(), 3, 4),
                         rlcore::make_matrix_view(v.data(), 3, 4),
                         rlcore::make_matrix_view(a.data(), 3, 4),
                         rlcore::make_matrix_view(ret.data(), 3, 4), {1.0, 1.0, true});
  for (size_t k = 0; k < 12; ++k) {
    CHECK(std::isfinite(a[k]));
  }
  // Every row identical: each column has the same advantage in all rows; G = 1 groups: 0.
  std::vector<T> same(5, T(0.1)), same_out(5, T(42));
  rlcore::grpo_outcome_sequence_advantages(same, rlcore::uniform_groups{5}, same_out);
  CHECK(same_out == std::vector<T>(5, T(0)));
  rlcore::grpo_outcome_sequence_advantages(same, rlcore::uniform_groups{1}, same_out);
  CHECK(same_out == std::vector<T>(5, T(0)));
}

TEST_CASE("identical rewards give exactly 0 for every group estimator (pitfall 3)") {
  // 0.1 is not representable: 0.1 + 0.1 + 0.1 != 0.3, so a one-pass mean would leave residue.
  const std::vector<double> scores(6, 0.1);
  std::vector<std::uint8_t> mask{1, 1, 0, 1, 1, 1};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 6, 1));
  std::vector<double> a(6, 42);
  const rlcore::uniform_groups g{3};
  auto all_zero = [&] { CHECK(a == std::vector<double>(6, 0.0)); };
  for (auto scaling :
       {rlcore::grpo_scaling::group, rlcore::grpo_scaling::batch, rlcore::grpo_scaling::none}) {
    rlcore::grpo_advantage_options o;
    o.scaling = scaling;
    rlcore::grpo_outcome_advantages(layout, scores, g, rlcore::make_matrix_view(a.data(), 6, 1), o);
    all_zero();
  }
  rlcore::rloo_advantages(layout, scores, g, rlcore::make_matrix_view(a.data(), 6, 1));
  all_zero();
  rlcore::opo_advantages(layout, scores, g, rlcore::make_matrix_view(a.data(), 6, 1));
  all_zero();
  rlcore::pass_at_k_advantages(layout, scores, g, rlcore::make_matrix_view(a.data(), 6, 1));
  all_zero();
  // REINFORCE++ baseline: identical sequence scores cancel at the last token (no masked row
  // here: an all-masked row scores 0, which is not identical).
  std::vector<double> r(6, 0.1);
  rlcore::reinforce_options o;
  o.whiten_kind = rlcore::whiten_kind::none;
  rlcore::reinforce_plus_plus_baseline_advantages(rlcore::padded_unmasked(6, 1),
                                                  rlcore::make_matrix_view(r.data(), 6, 1), g,
                                                  rlcore::make_matrix_view(a.data(), 6, 1), o);
  all_zero();
  // GRPO process: identical step rewards in the group.
  std::vector<double> ends(6, 1.0);
  rlcore::grpo_process_advantages(layout, rlcore::make_matrix_view(r.data(), 6, 1),
                                  rlcore::make_matrix_view(ends.data(), 6, 1), g,
                                  rlcore::make_matrix_view(a.data(), 6, 1));
  all_zero();
}

TEST_CASE("Eigen column-major tensors give the same results as row-major buffers") {
  const random_batch b(5, 6, 31);
  Eigen::MatrixXd r(b.n, b.cols), v(b.n, b.cols), a(b.n, b.cols), ret(b.n, b.cols);
  for (index_t i = 0; i < b.n; ++i) {
    for (index_t t = 0; t < b.cols; ++t) {
      r(i, t) = b.rewards[static_cast<size_t>(i * b.cols + t)];
      v(i, t) = b.values[static_cast<size_t>(i * b.cols + t)];
    }
  }
  const auto pad = b.padded();
  std::vector<double> a2(b.rewards.size()), ret2(a2.size());
  rlcore::gae_advantages(pad, r, v, a, ret, {0.9, 0.8, true});
  rlcore::gae_advantages(pad, b.mat(b.rewards), b.mat(b.values), b.mat(a2), b.mat(ret2),
                         {0.9, 0.8, true});
  Eigen::VectorXd scores(b.n), seq(b.n);
  for (index_t i = 0; i < b.n; ++i) {
    scores(i) = static_cast<double>(i % 3);
  }
  rlcore::grpo_outcome_sequence_advantages(scores, rlcore::uniform_groups{5}, seq);
  for (index_t i = 0; i < b.n; ++i) {
    for (index_t t = 0; t < b.cols; ++t) {
      CHECK(a(i, t) == a2[static_cast<size_t>(i * b.cols + t)]);
      CHECK(ret(i, t) == ret2[static_cast<size_t>(i * b.cols + t)]);
    }
  }
  // scores {0, 1, 2, 0, 1}: mean 0.8, unbiased var (0.64 + 0.04 + 1.44 + 0.64 + 0.04) / 4 = 0.7.
  CHECK(seq(2) == doctest::Approx(1.2 / (std::sqrt(0.7) + 1e-6)));
}
