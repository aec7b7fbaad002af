// Determinism on the host: the same inputs give the same bits, run after run, and a padded batch
// and the packed batch holding the same tokens (every row packed at full length, same mask) give
// bitwise identical per-token outputs and losses. (GPU determinism: tests/cuda.)
#include "reliability_util.hpp"

#include <rlcore/advantage/all.hpp>
#include <rlcore/objective/logits.hpp>
#include <rlcore/objective/policy.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

using rlcore::index_t;
using rlcore_reliability::same_bits;

namespace {

constexpr index_t rows = 16;
constexpr index_t cols = 12;

struct batch_data {
  std::vector<std::uint8_t> mask;
  std::vector<index_t> offsets;
  std::vector<double> rewards, values, lp, old, scores;
};

batch_data make_batch() {
  std::mt19937_64 gen(6);
  std::normal_distribution<double> normal(0.0, 3.0);
  std::bernoulli_distribution keep(0.8);
  batch_data d;
  for (index_t k = 0; k < rows * cols; ++k) {
    d.mask.push_back(keep(gen) ? 1 : 0);
    d.rewards.push_back(normal(gen));
    d.values.push_back(normal(gen));
    d.lp.push_back(-std::abs(normal(gen)));
    d.old.push_back(-std::abs(normal(gen)));
  }
  for (index_t i = 0; i <= rows; ++i) {
    d.offsets.push_back(i * cols);
  }
  for (index_t i = 0; i < rows; ++i) {
    d.scores.push_back(normal(gen) * 1e20);
  }
  return d;
}

struct outputs {
  std::vector<double> grpo, gae, returns, reinforce, grad;
  double loss = 0;
};

// Runs the estimators and the policy objective on `layout`; make(v) gives the per-token tensor.
template <class Layout, class Make>
outputs run(const Layout& layout, Make make, batch_data& d) {
  outputs o;
  const auto slots = static_cast<std::size_t>(rows * cols);
  o.grpo.assign(slots, 0.0);
  o.gae.assign(slots, 0.0);
  o.returns.assign(slots, 0.0);
  o.reinforce.assign(slots, 0.0);
  o.grad.assign(slots, 0.0);
  rlcore::grpo_outcome_advantages(layout, d.scores, rlcore::uniform_groups{4}, make(o.grpo));
  rlcore::gae_advantages(layout, make(d.rewards), make(d.values), make(o.gae), make(o.returns),
                         rlcore::gae_options{0.99, 0.95, true});
  std::vector<double> unused(slots);
  rlcore::reinforce_plus_plus_advantages(layout, make(d.rewards), make(o.reinforce), make(unused));
  rlcore::policy_options p;
  p.aggregation.mode = rlcore::aggregation::seq_mean_token_mean;
  o.loss =
      rlcore::policy_objective(layout, make(d.lp), make(d.old), make(o.gae), make(o.grad), p).loss;
  return o;
}

struct padded_maker {
  template <class T>
  auto operator()(std::vector<T>& v) const {
    return rlcore::make_matrix_view(v.data(), rows, cols);
  }
};

struct packed_maker {
  template <class T>
  std::vector<T>& operator()(std::vector<T>& v) const {
    return v;
  }
};

void check_same(const outputs& a, const outputs& b) {
  CHECK(same_bits(a.grpo, b.grpo));
  CHECK(same_bits(a.gae, b.gae));
  CHECK(same_bits(a.returns, b.returns));
  CHECK(same_bits(a.reinforce, b.reinforce));
  CHECK(same_bits(a.grad, b.grad));
  CHECK(same_bits(std::vector<double>{a.loss}, std::vector<double>{b.loss}));
}

} // namespace

TEST_CASE("run to run: identical bits") {
  auto d = make_batch();
  const auto layout = rlcore::padded(rlcore::make_matrix_view(d.mask.data(), rows, cols));
  const outputs first = run(layout, padded_maker{}, d);
  for (int repeat = 0; repeat < 3; ++repeat) {
    check_same(first, run(layout, padded_maker{}, d));
  }
  // The outputs are not trivially zero: the comparison means something.
  CHECK(first.loss != 0.0);
}

TEST_CASE("padded and packed layouts of the same tokens: identical bits") {
  auto d = make_batch();
  const auto padded = rlcore::padded(rlcore::make_matrix_view(d.mask.data(), rows, cols));
  const auto packed = rlcore::packed(d.offsets, d.mask);
  check_same(run(padded, padded_maker{}, d), run(packed, packed_maker{}, d));
}

TEST_CASE("logits: run to run identical bits over a 151936-wide vocabulary") {
  constexpr index_t vocab = 151936;
  std::mt19937_64 gen(7);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> z(static_cast<std::size_t>(3 * vocab));
  for (auto& x : z) {
    x = normal(gen);
  }
  std::vector<std::int32_t> ids{0, 77, static_cast<std::int32_t>(vocab - 1)};
  const auto logits = rlcore::make_matrix_view(z.data(), 3, vocab);
  std::vector<float> lp1(3), h1(3), lp2(3), h2(3);
  rlcore::token_log_probs(logits, ids, lp1, h1);
  rlcore::token_log_probs(logits, ids, lp2, h2);
  CHECK(same_bits(lp1, lp2));
  CHECK(same_bits(h1, h2));
}
