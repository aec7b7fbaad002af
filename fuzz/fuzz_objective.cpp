// Fuzz target: the policy objective (every loss form, clip options, KL estimators, entropy bonus
// and masking, importance correction, every aggregation mode), the GRPO objective, the KL penalty
// loss, KL in the reward and the clipped value loss, on random padded/packed batches with
// log-ratios up to +-2e4, advantages up to 1e30, and NaN / inf / 1e30 at masked slots. One fault
// per input at times (an option out of range, a tensor of the wrong shape) must raise
// rlcore::invalid_argument. Otherwise: loss, metrics and gradients finite; gradients exactly 0 at
// masked slots; fractions in [0, 1]; valid_tokens = the number of valid tokens; the entropy bonus
// gradient = -coef * w; the adaptive KL controller's beta finite and >= 0 over random updates
// (horizons >= 1: a denormal horizon overflows beta, reported in docs/reliability.md); and, for
// the REINFORCE form alone, grad = -A * w with w the aggregation weight of the mode:
//   token_mean 1/N_tok, token_sum 1, seq_mean_token_sum 1/N_seq, seq_mean_token_mean
//   1/(N_seq n_i), seq_mean_token_sum_norm 1/(N_seq L), and loss = sum_t w (-A lp).
#include "batch.hpp"

#include <rlcore/control/kl_controller.hpp>
#include <rlcore/objective/entropy_bonus.hpp>
#include <rlcore/objective/grpo.hpp>
#include <rlcore/objective/kl_penalty.hpp>
#include <rlcore/objective/policy.hpp>
#include <rlcore/objective/value_loss.hpp>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using rlcore::index_t;
using rlcore_fuzz::batch;
using rlcore_fuzz::check;
using rlcore_fuzz::input_tensor;
using rlcore_fuzz::make_buffer;
using rlcore_fuzz::succeeds_or_invalid;
using rlcore_fuzz::token_tensor;

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double nan = std::numeric_limits<double>::quiet_NaN();

// Per-token input values; masked slots get garbage (NaN, +-inf, 1e30) that must never be read
// into a result.
std::vector<double> token_values(FuzzedDataProvider& in, const batch& b, double limit,
                                 bool garbage_at_masked) {
  auto v = rlcore_fuzz::finite_values(in, b.mask.size(), limit);
  if (garbage_at_masked) {
    const double garbage = in.PickValueInArray({nan, inf, -inf, 1e30, -1e300});
    for (std::size_t k = 0; k < v.size(); ++k) {
      if (b.mask[k] == 0) {
        v[k] = garbage;
      }
    }
  }
  return v;
}

void check_finite(const std::vector<double>& v, const char* what) {
  for (double x : v) {
    check(std::isfinite(x), what, x);
  }
}

void check_masked_zero(const batch& b, const std::vector<double>& v, const char* what) {
  for (std::size_t k = 0; k < b.mask.size(); ++k) {
    if (b.mask[k] == 0) {
      check(v[k] == 0.0, what, v[k]);
    }
  }
}

void check_fraction(double x, const char* what) {
  check(std::isfinite(x) && x >= 0 && x <= 1 + 1e-12, what, x);
}

double valid_tokens(const batch& b) {
  double n = 0;
  for (auto m : b.mask) {
    n += m != 0 ? 1 : 0;
  }
  return n;
}

// A valid aggregation (with global counts at times) or, with `fault`, an invalid one.
rlcore::aggregation_options pick_aggregation(FuzzedDataProvider& in, const batch& b, bool fault) {
  rlcore::aggregation_options a;
  a.mode = in.PickValueInArray({rlcore::aggregation::token_mean, rlcore::aggregation::token_sum,
                                rlcore::aggregation::seq_mean_token_sum,
                                rlcore::aggregation::seq_mean_token_mean,
                                rlcore::aggregation::seq_mean_token_sum_norm});
  a.length_normalizer = in.PickValueInArray({1.0, 7.0, 4096.0});
  if (in.ConsumeBool()) {
    a.global_tokens = valid_tokens(b) + in.ConsumeIntegralInRange<int>(0, 9);
  }
  if (in.ConsumeBool()) {
    a.global_sequences = static_cast<double>(b.n + in.ConsumeIntegralInRange<int>(0, 9));
  }
  if (fault) {
    switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0:
      a.global_sequences = static_cast<double>(b.n) - 1;
      break;
    case 1:
      a.mode = rlcore::aggregation::seq_mean_token_sum_norm;
      a.length_normalizer = in.PickValueInArray({0.0, -1.0});
      break;
    default:
      a.mode = static_cast<rlcore::aggregation>(17);
      break;
    }
  }
  return a;
}

// The aggregation weight of row i (REINFORCE oracle).
double row_weight(const batch& b, const rlcore::aggregation_options& a, index_t i) {
  const double tokens = a.global_tokens >= 0 ? a.global_tokens : valid_tokens(b);
  const double seqs = a.global_sequences >= 0 ? a.global_sequences : static_cast<double>(b.n);
  switch (a.mode) {
  case rlcore::aggregation::token_mean:
    return tokens > 0 ? 1.0 / tokens : 0.0;
  case rlcore::aggregation::token_sum:
    return 1.0;
  case rlcore::aggregation::seq_mean_token_sum:
    return 1.0 / seqs;
  case rlcore::aggregation::seq_mean_token_mean: {
    const auto n_i = static_cast<double>(b.valid_count(i));
    return n_i > 0 ? 1.0 / (seqs * n_i) : 0.0;
  }
  default:
    return 1.0 / (seqs * a.length_normalizer);
  }
}

template <class Layout>
void fuzz_policy(FuzzedDataProvider& in, const batch& b, const Layout& layout, bool fault) {
  const bool garbage = in.ConsumeBool();
  const auto lp = token_values(in, b, 1e4, garbage);
  auto old = lp;
  for (std::size_t k = 0; k < old.size(); ++k) { // log-ratios lp - old up to +-2e4
    old[k] = std::isfinite(lp[k]) ? lp[k] - rlcore_fuzz::finite_value(in, 1e4) : lp[k];
  }
  const auto adv = token_values(in, b, 1e30, garbage);
  const auto ref = token_values(in, b, 1e4, garbage);
  auto entropy = token_values(in, b, 1e4, garbage);
  for (auto& h : entropy) {
    h = std::fabs(h);
  }
  const auto rollout = token_values(in, b, 1e4, garbage);

  rlcore::policy_options o;
  o.loss = in.PickValueInArray({rlcore::policy_loss::clipped, rlcore::policy_loss::gspo,
                                rlcore::policy_loss::gmpo, rlcore::policy_loss::cispo,
                                rlcore::policy_loss::sapo, rlcore::policy_loss::reinforce});
  o.eps_low = in.PickValueInArray({0.2, 0.0, 1.0, 0.1});
  o.eps_high = in.PickValueInArray({0.2, 0.28, 0.0, 10.0});
  o.dual_clip = in.PickValueInArray({0.0, 3.0, 1.0001});
  o.delta_clip = in.PickValueInArray({0.0, 4.0});
  o.gspo = in.ConsumeBool() ? rlcore::gspo_level::sequence : rlcore::gspo_level::token;
  o.log_ratio_clamp = in.PickValueInArray({20.0, 80.0, 1e-3});
  o.kl = in.PickValueInArray({rlcore::kl_estimator::k1, rlcore::kl_estimator::abs,
                              rlcore::kl_estimator::k2, rlcore::kl_estimator::k3,
                              rlcore::kl_estimator::k1_plus, rlcore::kl_estimator::k3_plus,
                              rlcore::kl_estimator::k3_importance});
  o.kl_beta = in.PickValueInArray({0.0, 0.04, 1.0});
  o.kl_output_clamp = in.ConsumeBool();
  o.entropy_coef = in.PickValueInArray({0.0, 0.01, -1.0});
  o.entropy_top_fraction = in.PickValueInArray({1.0, 0.5, 0.2, 1e-9});
  o.importance.level =
      in.PickValueInArray({rlcore::importance_level::none, rlcore::importance_level::token,
                           rlcore::importance_level::sequence});
  o.importance.mode =
      in.ConsumeBool() ? rlcore::importance_mode::truncate : rlcore::importance_mode::mask;
  const bool option_fault = fault && in.ConsumeBool();
  const bool shape_fault = fault && !option_fault;
  const bool aggregation_fault = option_fault && in.ConsumeBool();
  o.aggregation = pick_aggregation(in, b, aggregation_fault);
  if (option_fault && !aggregation_fault) {
    switch (in.ConsumeIntegralInRange<int>(0, 6)) {
    case 0:
      o.eps_low = 1.5;
      break;
    case 1:
      o.dual_clip = 0.5;
      break;
    case 2:
      o.log_ratio_clamp = in.PickValueInArray({0.0, 81.0, nan});
      break;
    case 3:
      o.kl_beta = in.PickValueInArray({-1.0, inf, nan});
      break;
    case 4:
      o.entropy_top_fraction = 0;
      break;
    case 5:
      o.importance.cap = 0;
      o.importance.mode = rlcore::importance_mode::truncate;
      break;
    default:
      o.sapo_tau_neg = -1;
      break;
    }
  }
  const bool reinforce_only = o.loss == rlcore::policy_loss::reinforce && o.kl_beta == 0
                              && o.entropy_coef == 0 && o.entropy_top_fraction == 1
                              && o.importance.level == rlcore::importance_level::none;
  auto grad = make_buffer(b, shape_fault, 5.0);
  auto grad_entropy = make_buffer(b, false, 5.0);
  rlcore::objective_result r;
  const bool ok = succeeds_or_invalid([&] {
    const auto lpv = input_tensor(b, layout, lp);
    const auto oldv = input_tensor(b, layout, old);
    const auto advv = input_tensor(b, layout, adv);
    const auto refv = input_tensor(b, layout, ref);
    const auto entv = input_tensor(b, layout, entropy);
    const auto rollv = input_tensor(b, layout, rollout);
    r = rlcore::policy_objective(
        layout,
        rlcore::policy_inputs<decltype(lpv), decltype(oldv), decltype(advv), decltype(refv),
                              decltype(entv), decltype(rollv)>{lpv, oldv, advv, refv, entv, rollv},
        token_tensor(b, layout, grad), token_tensor(b, layout, grad_entropy), o);
  });
  check(ok == !fault, "policy_objective: fault <=> invalid_argument");
  if (!ok) {
    return;
  }
  check(std::isfinite(r.loss), "policy loss finite", r.loss);
  const auto& m = r.metrics;
  for (double x : {m.policy_loss, m.kl_loss, m.entropy_loss, m.approx_kl, m.kl_penalty_mean,
                   m.entropy_mean, m.advantage_mean, m.advantage_std, m.importance_weight_mean}) {
    check(std::isfinite(x), "policy metric finite", x);
  }
  for (double x : {m.clip_fraction_low, m.clip_fraction_high, m.clip_fraction, m.dual_clip_fraction,
                   m.importance_corrected_fraction, m.entropy_kept_fraction}) {
    check_fraction(x, "policy fraction in [0, 1]");
  }
  check(m.valid_tokens == valid_tokens(b), "valid_tokens metric", m.valid_tokens);
  check_finite(grad.data, "policy gradient finite");
  check_masked_zero(b, grad.data, "policy gradient 0 at masked slots");
  check_finite(grad_entropy.data, "entropy gradient finite");
  check_masked_zero(b, grad_entropy.data, "entropy gradient 0 at masked slots");
  if (!reinforce_only) {
    return;
  }
  double loss = 0;
  double scale = 0;
  for (index_t i = 0; i < b.n; ++i) {
    const double w = row_weight(b, o.aggregation, i);
    for (index_t t = 0; t < b.length(i); ++t) {
      if (!b.valid(i, t)) {
        continue;
      }
      const std::size_t k = b.slot(i, t);
      const double expected = -adv[k] * w;
      check(std::fabs(grad.data[k] - expected) <= 1e-12 * std::fabs(expected),
            "REINFORCE grad = -A * aggregation weight", grad.data[k]);
      loss += w * (-adv[k] * lp[k]);
      scale += std::fabs(w * adv[k] * lp[k]);
    }
  }
  check(std::fabs(r.loss - loss) <= 1e-12 * scale + 1e-300, "REINFORCE loss = sum w (-A lp)",
        r.loss);
}

template <class Layout>
void fuzz_grpo_objective(FuzzedDataProvider& in, const batch& b, const Layout& layout, bool fault) {
  const bool garbage = in.ConsumeBool();
  const auto lp = token_values(in, b, 1e4, garbage);
  const auto old = token_values(in, b, 1e4, garbage);
  const auto ref = token_values(in, b, 1e4, garbage);
  const auto adv = token_values(in, b, 1e30, garbage);
  rlcore::grpo_options o;
  o.eps = in.PickValueInArray({0.2, 0.0, 1.0});
  o.beta = in.PickValueInArray({0.04, 0.0, 1.0});
  if (fault) {
    o.eps = in.PickValueInArray({-0.1, 1.5, nan});
  }
  auto grad = make_buffer(b, false, 5.0);
  rlcore::objective_result r;
  const bool ok = succeeds_or_invalid([&] {
    r = rlcore::grpo_objective(layout, input_tensor(b, layout, lp), input_tensor(b, layout, old),
                               input_tensor(b, layout, ref), input_tensor(b, layout, adv),
                               token_tensor(b, layout, grad), o);
  });
  check(ok == !fault, "grpo_objective: fault <=> invalid_argument");
  if (!ok) {
    return;
  }
  check(std::isfinite(r.loss), "grpo loss finite", r.loss);
  check_fraction(r.metrics.clip_fraction, "grpo clip fraction");
  check_finite(grad.data, "grpo gradient finite");
  check_masked_zero(b, grad.data, "grpo gradient 0 at masked slots");
}

template <class Layout>
void fuzz_kl(FuzzedDataProvider& in, const batch& b, const Layout& layout, bool fault) {
  const bool garbage = in.ConsumeBool();
  const auto lp = token_values(in, b, 1e4, garbage);
  const auto old = token_values(in, b, 1e4, garbage);
  const auto ref = token_values(in, b, 1e4, garbage);
  rlcore::kl_penalty_options o;
  o.estimator = in.PickValueInArray({rlcore::kl_estimator::k1, rlcore::kl_estimator::abs,
                                     rlcore::kl_estimator::k2, rlcore::kl_estimator::k3,
                                     rlcore::kl_estimator::k1_plus, rlcore::kl_estimator::k3_plus,
                                     rlcore::kl_estimator::k3_importance});
  o.log_ratio_clamp = in.PickValueInArray({20.0, 80.0, 0.5});
  o.output_clamp = in.ConsumeBool();
  o.aggregation = pick_aggregation(in, b, false);
  if (fault) {
    o.log_ratio_clamp = in.PickValueInArray({0.0, 100.0, nan});
  }
  const bool with_old = in.ConsumeBool();
  auto grad = make_buffer(b, false, 5.0);
  rlcore::kl_penalty_result r;
  const bool ok = succeeds_or_invalid([&] {
    if (with_old) {
      r = rlcore::kl_penalty_loss(layout, input_tensor(b, layout, lp), input_tensor(b, layout, old),
                                  input_tensor(b, layout, ref), token_tensor(b, layout, grad), o);
    } else {
      r = rlcore::kl_penalty_loss(layout, input_tensor(b, layout, lp), input_tensor(b, layout, ref),
                                  token_tensor(b, layout, grad), o);
    }
  });
  const bool needs_old = o.estimator == rlcore::kl_estimator::k3_importance && !with_old;
  check(ok == (!fault && !needs_old), "kl_penalty_loss: fault <=> invalid_argument");
  if (ok) {
    check(std::isfinite(r.loss) && std::isfinite(r.kl_mean), "kl loss finite", r.loss);
    check(r.valid_tokens == valid_tokens(b), "kl valid tokens");
    check_finite(grad.data, "kl gradient finite");
    check_masked_zero(b, grad.data, "kl gradient 0 at masked slots");
  }
  // KL in the reward: valid slots finite, masked slots bitwise untouched.
  auto rewards = token_values(in, b, 1e30, garbage);
  const auto before = rewards;
  const double beta = fault ? -1.0 : in.PickValueInArray({0.0, 0.01, 1.0});
  const auto estimator =
      o.estimator == rlcore::kl_estimator::k3_importance ? rlcore::kl_estimator::k3 : o.estimator;
  rlcore::kl_penalty_options clamp;
  clamp.output_clamp = o.output_clamp;
  double mean = 0;
  const bool reward_ok = succeeds_or_invalid([&] {
    rlcore_fuzz::token_buffer buffer{rewards, b.cols};
    mean = rlcore::apply_kl_to_rewards(layout, token_tensor(b, layout, buffer),
                                       input_tensor(b, layout, lp), input_tensor(b, layout, ref),
                                       beta, estimator, clamp);
    rewards = buffer.data;
  });
  check(reward_ok == !fault, "apply_kl_to_rewards: fault <=> invalid_argument");
  if (reward_ok) {
    check(std::isfinite(mean), "mean KL finite", mean);
    for (std::size_t k = 0; k < rewards.size(); ++k) {
      if (b.mask[k] != 0) {
        check(std::isfinite(rewards[k]), "KL-shaped reward finite", rewards[k]);
      } else {
        check(std::memcmp(&rewards[k], &before[k], sizeof(double)) == 0,
              "masked rewards untouched by the KL");
      }
    }
  }
}

template <class Layout>
void fuzz_value_loss(FuzzedDataProvider& in, const batch& b, const Layout& layout, bool fault) {
  const bool garbage = in.ConsumeBool();
  const auto v = token_values(in, b, 1e30, garbage);
  const auto old = token_values(in, b, 1e30, garbage);
  const auto ret = token_values(in, b, 1e30, garbage);
  rlcore::value_loss_options o;
  o.clip = in.PickValueInArray({0.5, 0.0, 0.2, inf, 1e30});
  o.aggregation = pick_aggregation(in, b, false);
  if (fault) {
    o.clip = in.PickValueInArray({-0.5, nan});
  }
  auto grad = make_buffer(b, false, 5.0);
  rlcore::value_loss_result r;
  const bool ok = succeeds_or_invalid([&] {
    r = rlcore::value_loss(layout, input_tensor(b, layout, v), input_tensor(b, layout, old),
                           input_tensor(b, layout, ret), token_tensor(b, layout, grad), o);
  });
  check(ok == !fault, "value_loss: fault <=> invalid_argument");
  if (!ok) {
    return;
  }
  check(std::isfinite(r.loss) && r.loss >= 0, "value loss finite and >= 0", r.loss);
  check_fraction(r.clip_fraction, "value clip fraction");
  check(std::isfinite(r.value_mean), "value mean finite", r.value_mean);
  check_finite(grad.data, "value gradient finite");
  check_masked_zero(b, grad.data, "value gradient 0 at masked slots");
}

template <class Layout>
void fuzz_entropy_bonus(FuzzedDataProvider& in, const batch& b, const Layout& layout, bool fault) {
  const bool garbage = in.ConsumeBool();
  auto h = token_values(in, b, 1e4, garbage);
  rlcore::entropy_bonus_options o;
  o.coef = fault ? in.PickValueInArray({nan, inf}) : rlcore_fuzz::finite_value(in, 1e4);
  o.aggregation = pick_aggregation(in, b, false);
  auto grad = make_buffer(b, false, 5.0);
  rlcore::entropy_bonus_result r;
  const bool ok = succeeds_or_invalid([&] {
    r = rlcore::entropy_bonus_loss(layout, input_tensor(b, layout, h),
                                   token_tensor(b, layout, grad), o);
  });
  check(ok == !fault, "entropy_bonus_loss: fault <=> invalid_argument");
  if (!ok) {
    return;
  }
  check(std::isfinite(r.loss) && std::isfinite(r.entropy_mean), "entropy bonus finite", r.loss);
  check_finite(grad.data, "entropy bonus gradient finite");
  check_masked_zero(b, grad.data, "entropy bonus gradient 0 at masked slots");
  // d loss / d H = -coef * w at valid slots.
  for (index_t i = 0; i < b.n; ++i) {
    const double expected = -o.coef * row_weight(b, o.aggregation, i);
    for (index_t t = 0; t < b.length(i); ++t) {
      if (b.valid(i, t)) {
        const double g = grad.data[b.slot(i, t)];
        check(std::fabs(g - expected) <= 1e-12 * std::fabs(expected), "entropy grad = -coef w", g);
      }
    }
  }
}

// The adaptive KL controller over a random sequence of updates: beta stays finite and >= 0 for
// every accepted input (any finite beta, target, KL; horizon >= 1; up to 2^62 steps per update),
// and a horizon below one step (0.5, a denormal), <= 0 or non-finite is an error.
void fuzz_kl_controller(FuzzedDataProvider& in) {
  constexpr double largest = std::numeric_limits<double>::max();
  const double beta = std::fabs(rlcore_fuzz::finite_value(in, largest));
  const double target = std::fabs(rlcore_fuzz::finite_value(in, largest));
  const bool bad_horizon = in.ConsumeIntegralInRange<int>(0, 7) == 0;
  const double horizon =
      bad_horizon ? in.PickValueInArray(
          {0.0, -1.0, inf, nan, 0.5, 4.9406564584124654e-324, std::nextafter(1.0, 0.0)})
                  : std::fmin(1.0 + std::fabs(rlcore_fuzz::finite_value(in, largest)), largest);
  const bool valid = target > 0 && !bad_horizon;
  const bool ok = succeeds_or_invalid([&] {
    rlcore::adaptive_kl_controller controller(beta, target, horizon);
    const int updates = in.ConsumeIntegralInRange<int>(0, 50);
    for (int k = 0; k < updates; ++k) {
      const double kl = rlcore_fuzz::finite_value(in, largest);
      const auto steps = in.ConsumeBool() ? in.ConsumeIntegralInRange<index_t>(0, 1 << 20)
                                          : in.ConsumeIntegralInRange<index_t>(0, index_t{1} << 62);
      controller.update(kl, steps);
      check(std::isfinite(controller.value()) && controller.value() >= 0,
            "adaptive KL beta finite and >= 0", controller.value());
    }
  });
  check(ok == valid, "adaptive_kl_controller: bad target/horizon <=> invalid_argument");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const batch b = rlcore_fuzz::random_batch(in);
  const int which = in.ConsumeIntegralInRange<int>(0, 6);
  const bool fault = in.ConsumeIntegralInRange<int>(0, 7) == 0;
  rlcore_fuzz::with_layout(b, [&](const auto& layout, const auto&, auto) {
    switch (which) {
    case 0:
    case 1:
      fuzz_policy(in, b, layout, fault);
      break;
    case 2:
      fuzz_grpo_objective(in, b, layout, fault);
      break;
    case 3:
      fuzz_kl(in, b, layout, fault);
      break;
    case 4:
      fuzz_value_loss(in, b, layout, fault);
      break;
    case 5:
      fuzz_entropy_bonus(in, b, layout, fault);
      break;
    default:
      fuzz_kl_controller(in);
      break;
    }
  });
  return 0;
}
