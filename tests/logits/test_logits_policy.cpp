// grpo_loss_from_logits / policy_loss_from_logits: the composition logits -> lp -> objective ->
// d loss / d logits. An independent on-policy reference, finite differences off-policy, the
// entropy bonus, masked slots with inf logits, and errors passed through.
#include "../common/check_invalid.hpp"
#include "logits_reference.hpp"

#include <rlcore/advantage/all.hpp>
#include <rlcore/objective/logits.hpp>
#include <rlcore/objective/logits_policy.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

using rlcore_test::check_invalid;

using rlcore::index_t;

namespace {

constexpr index_t n_seq = 2;
constexpr index_t t_len = 3;
constexpr index_t vocab = 5;
constexpr index_t slots = n_seq * t_len;

// Padded batch N = 2, T = 3, V = 5; slot (0, 1) is an interior hole.
struct batch {
  std::vector<double> logits = logits_ref::random_logits(slots * vocab, 2.0, 51);
  std::vector<int> ids{4, 0, 2, 1, 3, 0};
  std::vector<std::uint8_t> mask{1, 0, 1, 1, 1, 1};
  std::vector<double> ref = logits_ref::random_logits(slots, 0.5, 52);
  std::vector<double> adv{0.7, 0.7, 0.7, -1.2, -1.2, -1.2};

  // The reference log-prob of slot s under softmax(logits / tau), from the naive reference.
  [[nodiscard]] double naive_lp(const std::vector<double>& z, index_t s, double tau) const {
    const std::vector<logits_ref::real> row(z.begin() + s * vocab, z.begin() + (s + 1) * vocab);
    return double(logits_ref::log_softmax(
        row, tau)[static_cast<std::size_t>(ids[static_cast<std::size_t>(s)])]);
  }
};

} // namespace

TEST_CASE("grpo_loss_from_logits on-policy equals the DeepSeekMath formula (independent)") {
  // With old = lp (one update per sampling stage) the ratio is 1, so per valid token
  //   l = -A + beta * (exp(ref - lp) - (ref - lp) - 1),   dl/dlp = -A + beta * (1 - exp(ref - lp))
  // aggregated seq-mean-token-mean: w_i = 1 / (N * n_i); n = (2, 3). Chain rule:
  //   d loss / dz_j = w_i dl/dlp (1[j == id] - p_j) / tau.
  const batch b;
  const double tau = 0.8;
  const double beta = 0.04;
  std::vector<double> old(slots);
  for (index_t s = 0; s < slots; ++s) {
    old[static_cast<std::size_t>(s)] = b.naive_lp(b.logits, s, tau);
  }
  const auto layout = rlcore::padded(rlcore::make_matrix_view(b.mask.data(), n_seq, t_len));
  const auto tok = [](auto& v) { return rlcore::make_matrix_view(v.data(), n_seq, t_len); };
  std::vector<double> grad(slots * vocab, 42.0);
  rlcore::logits_options lo;
  lo.temperature = tau;
  const auto result = rlcore::grpo_loss_from_logits(
      layout, rlcore::make_matrix_view(b.logits.data(), slots, vocab), tok(b.ids), tok(old),
      tok(b.ref), tok(b.adv), rlcore::make_matrix_view(grad.data(), slots, vocab), {}, lo);

  double loss = 0;
  const double n_valid[2] = {2, 3};
  for (index_t s = 0; s < slots; ++s) {
    const auto si = static_cast<std::size_t>(s);
    const std::vector<logits_ref::real> row(b.logits.begin() + s * vocab,
                                            b.logits.begin() + (s + 1) * vocab);
    const auto logp = logits_ref::log_softmax(row, tau);
    for (index_t j = 0; j < vocab; ++j) {
      const auto k = static_cast<std::size_t>(s * vocab + j);
      if (b.mask[si] == 0) {
        CHECK(grad[k] == 0.0);
        continue;
      }
      const double w = 1.0 / (2.0 * n_valid[s / t_len]);
      const double x = b.ref[si] - old[si];
      const double dl_dlp = -b.adv[si] + beta * (1.0 - std::exp(x));
      const double onehot = j == b.ids[si] ? 1.0 : 0.0;
      const double p = double(std::exp(logp[static_cast<std::size_t>(j)]));
      CHECK(grad[k] == doctest::Approx(w * dl_dlp * (onehot - p) / tau).epsilon(1e-12).scale(1));
      if (j == 0) {
        loss += w * (-b.adv[si] + beta * (std::exp(x) - x - 1.0));
      }
    }
  }
  CHECK(result.loss == doctest::Approx(loss).epsilon(1e-12));
  CHECK(result.metrics.valid_tokens == 5.0);
  CHECK(result.metrics.clip_fraction == 0.0);
}

TEST_CASE("grpo_loss_from_logits off-policy, packed with a mask: finite differences") {
  const batch b;
  const std::vector<index_t> offsets{0, 3, 6};
  const auto layout = rlcore::packed(offsets, b.mask);
  // Old log-probs away from lp by offsets that put some ratios outside [0.8, 1.2] (clipped,
  // zero gradient) and the rest inside, none within 1e-3 of a boundary.
  const double shifts[slots] = {0.05, 9.0, -0.4, 0.3, -0.1, 0.15};
  std::vector<double> old(slots);
  for (index_t s = 0; s < slots; ++s) {
    old[static_cast<std::size_t>(s)] = b.naive_lp(b.logits, s, 1.3) + shifts[s];
  }
  rlcore::grpo_options options;
  options.beta = 0.1;
  rlcore::logits_options lo;
  lo.temperature = 1.3;
  const auto z_of = [](const std::vector<double>& z) {
    return rlcore::make_matrix_view(z.data(), slots, vocab);
  };
  std::vector<double> grad(slots * vocab);
  std::vector<double> scratch(slots * vocab);
  const auto result = rlcore::grpo_loss_from_logits(
      layout, z_of(b.logits), b.ids, old, b.ref, b.adv,
      rlcore::make_matrix_view(grad.data(), slots, vocab), options, lo);
  CHECK(result.metrics.clip_fraction > 0.0);
  CHECK(result.metrics.clip_fraction < 1.0);
  const auto f = [&](const std::vector<double>& z) {
    return rlcore::grpo_loss_from_logits(layout, z_of(z), b.ids, old, b.ref, b.adv,
                                         rlcore::make_matrix_view(scratch.data(), slots, vocab),
                                         options, lo)
        .loss;
  };
  for (std::size_t j = 0; j < b.logits.size(); ++j) {
    CHECK(
        grad[j]
        == doctest::Approx(logits_ref::central_difference(f, b.logits, j)).epsilon(1e-6).scale(1));
  }
}

TEST_CASE("policy_loss_from_logits: entropy bonus flows back through the entropy gradient") {
  const batch b;
  const auto layout = rlcore::padded(rlcore::make_matrix_view(b.mask.data(), n_seq, t_len));
  const auto tok = [](auto& v) { return rlcore::make_matrix_view(v.data(), n_seq, t_len); };
  std::vector<double> old(slots);
  for (index_t s = 0; s < slots; ++s) {
    old[static_cast<std::size_t>(s)] = b.naive_lp(b.logits, s, 1.0) - 0.05;
  }
  rlcore::policy_options options;
  options.entropy_coef = 0.3;
  options.aggregation.mode = rlcore::aggregation::token_sum;
  const auto z_of = [](const std::vector<double>& z) {
    return rlcore::make_matrix_view(z.data(), slots, vocab);
  };
  std::vector<double> grad(slots * vocab);
  std::vector<double> scratch(slots * vocab);
  const auto result = rlcore::policy_loss_from_logits(
      layout, z_of(b.logits), tok(b.ids), tok(old), tok(b.adv), rlcore::none,
      rlcore::make_matrix_view(grad.data(), slots, vocab), options);
  // The entropy metric is the mean of the naive entropies of the 5 valid rows.
  double entropy_sum = 0;
  for (index_t s = 0; s < slots; ++s) {
    if (b.mask[static_cast<std::size_t>(s)] != 0) {
      entropy_sum += double(logits_ref::entropy(
          {b.logits.begin() + s * vocab, b.logits.begin() + (s + 1) * vocab}, 1.0));
    }
  }
  CHECK(result.metrics.entropy_mean == doctest::Approx(entropy_sum / 5));
  const auto f = [&](const std::vector<double>& z) {
    return rlcore::policy_loss_from_logits(
               layout, z_of(z), tok(b.ids), tok(old), tok(b.adv), rlcore::none,
               rlcore::make_matrix_view(scratch.data(), slots, vocab), options)
        .loss;
  };
  for (std::size_t j = 0; j < b.logits.size(); ++j) {
    CHECK(
        grad[j]
        == doctest::Approx(logits_ref::central_difference(f, b.logits, j)).epsilon(1e-6).scale(1));
  }
}

TEST_CASE("grpo_loss_from_logits: masked slots with inf / NaN logits; equals the three steps") {
  batch b;
  for (index_t j = 0; j < vocab; ++j) {
    b.logits[static_cast<std::size_t>(1 * vocab + j)] =
        j % 2 == 0 ? std::numeric_limits<double>::infinity() : std::nan("");
  }
  b.ids[1] = -3; // not read either
  std::vector<double> old(slots, -1.5);
  const auto layout = rlcore::padded(rlcore::make_matrix_view(b.mask.data(), n_seq, t_len));
  const auto tok = [](auto& v) { return rlcore::make_matrix_view(v.data(), n_seq, t_len); };
  const auto z = rlcore::make_matrix_view(b.logits.data(), slots, vocab);
  std::vector<double> grad(slots * vocab, 5.0);
  const auto result =
      rlcore::grpo_loss_from_logits(layout, z, tok(b.ids), tok(old), tok(b.ref), tok(b.adv),
                                    rlcore::make_matrix_view(grad.data(), slots, vocab));
  CHECK(std::isfinite(result.loss));
  for (double g : grad) {
    CHECK(std::isfinite(g));
  }
  for (index_t j = 0; j < vocab; ++j) {
    CHECK(grad[static_cast<std::size_t>(vocab + j)] == 0.0);
  }

  // The same three steps by hand give the same bits.
  std::vector<double> lp(slots);
  std::vector<double> h(slots);
  std::vector<double> grad_lp(slots);
  std::vector<double> grad_h(slots);
  std::vector<double> grad_manual(slots * vocab);
  rlcore::token_log_probs(layout, z, tok(b.ids), tok(lp), tok(h));
  const rlcore::grpo_options options;
  const auto manual = rlcore::policy_objective(
      layout,
      rlcore::policy_inputs<decltype(tok(lp)), decltype(tok(old)), decltype(tok(b.adv)),
                            decltype(tok(b.ref)), decltype(tok(h))>{tok(lp), tok(old), tok(b.adv),
                                                                    tok(b.ref), tok(h)},
      tok(grad_lp), tok(grad_h), options.as_policy_options());
  rlcore::token_log_probs_backward(layout, z, tok(b.ids), tok(grad_lp), tok(grad_h),
                                   rlcore::make_matrix_view(grad_manual.data(), slots, vocab));
  CHECK(manual.loss == result.loss);
  CHECK(grad_manual == grad);

  // In place: the gradient overwrites the logits buffer itself (rows read before written).
  std::vector<double> buffer = b.logits;
  const auto zb = rlcore::make_matrix_view(buffer.data(), slots, vocab);
  const auto in_place = rlcore::grpo_loss_from_logits(layout, zb.as_const(), tok(b.ids), tok(old),
                                                      tok(b.ref), tok(b.adv), zb);
  CHECK(in_place.loss == result.loss);
  CHECK(buffer == grad);
}

TEST_CASE("grpo_loss_from_logits: errors name the offending argument") {
  batch b;
  std::vector<double> old(slots, -1.0);
  const auto layout = rlcore::padded(rlcore::make_matrix_view(b.mask.data(), n_seq, t_len));
  const auto tok = [](auto& v) { return rlcore::make_matrix_view(v.data(), n_seq, t_len); };
  const auto z = rlcore::make_matrix_view(b.logits.data(), slots, vocab);
  std::vector<double> grad(slots * vocab);
  const auto g = rlcore::make_matrix_view(grad.data(), slots, vocab);
  b.ids[4] = vocab;
  check_invalid(
      [&] {
        (void)rlcore::grpo_loss_from_logits(layout, z, tok(b.ids), tok(old), tok(b.ref), tok(b.adv),
                                            g);
      },
      "token_ids", "got token_ids(1, 1) = 5 (logits row 4)");
  b.ids[4] = 0;
  const std::vector<double> short_old(4);
  check_invalid(
      [&] {
        (void)rlcore::grpo_loss_from_logits(layout, z, tok(b.ids),
                                            rlcore::make_matrix_view(short_old.data(), 2, 2),
                                            tok(b.ref), tok(b.adv), g);
      },
      "old_log_probs", "expected shape (2, 3)");
  rlcore::logits_options lo;
  lo.temperature = -1;
  check_invalid(
      [&] {
        (void)rlcore::grpo_loss_from_logits(layout, z, tok(b.ids), tok(old), tok(b.ref), tok(b.adv),
                                            g, {}, lo);
      },
      "options.temperature", "expected a finite temperature > 0");
}
