// Fuzz target: log-probs, entropy and full KL from logits, forward and backward, in float and
// double, with logits up to the bf16 maximum, temperatures from 0.25 to 4, vocabularies of 1 to 70,
// token ids outside [0, V) and non-finite logits (errors by default; -inf as a vocabulary mask
// under nonfinite_logits_policy::propagate), and the layout form with NaN logits in masked rows.
// Invariants: log-probs <= 0 and finite; 0 <= entropy <= log V; KL >= 0 and finite; gradient rows
// finite and summing to 0 (softmax gradients are orthogonal to the all-ones vector); masked slots
// get exactly 0 and a zero gradient row. The policy loss from logits (every loss form, KL and
// entropy bonus) gives a finite loss and finite, zero-sum gradient rows.
#include "batch.hpp"

#include <rlcore/objective/logits.hpp>
#include <rlcore/objective/logits_policy.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

using rlcore::index_t;
using rlcore_fuzz::check;
using rlcore_fuzz::succeeds_or_invalid;

constexpr double bf16_max = 3.3895313892515355e38;

template <class T>
std::vector<T> random_logits(FuzzedDataProvider& in, std::size_t n, double cap = bf16_max) {
  std::vector<T> z(n);
  const double limit = std::fmin(cap, in.PickValueInArray({bf16_max, 1e4, 30.0}));
  for (auto& x : z) {
    x = static_cast<T>(rlcore_fuzz::finite_value(in, limit));
  }
  return z;
}

// Row sums of a gradient must vanish: sum_j (g (1[j = id] - p_j)) = 0 and
// sum_j p_j (log p_j + H) = 0, up to V roundings of the largest term.
template <class T>
void check_gradient_rows(const std::vector<T>& grad, index_t rows, index_t vocab,
                         const std::vector<double>& row_scale, const char* what) {
  const double unit = std::numeric_limits<T>::epsilon();
  for (index_t r = 0; r < rows; ++r) {
    double sum = 0;
    bool saturated = false;
    for (index_t j = 0; j < vocab; ++j) {
      const double g = grad[static_cast<std::size_t>(r * vocab + j)];
      check(std::isfinite(g), what, g);
      saturated = saturated || std::fabs(g) == double(std::numeric_limits<T>::max());
      sum += g;
    }
    if (saturated) {
      // An element beyond T's range is stored as +-max (the sum no longer vanishes): only where
      // the row's bound on |g_j| exceeds that range.
      check(row_scale[static_cast<std::size_t>(r)] >= double(std::numeric_limits<T>::max()),
            "gradient saturated only beyond the range of T",
            row_scale[static_cast<std::size_t>(r)]);
      continue;
    }
    const double tolerance =
        16 * static_cast<double>(vocab + 1)
        * (unit * row_scale[static_cast<std::size_t>(r)] + std::numeric_limits<T>::denorm_min());
    check(std::fabs(sum) <= tolerance, "gradient row sums to 0", sum);
  }
}

template <class T>
void fuzz_token(FuzzedDataProvider& in) {
  const auto rows = in.ConsumeIntegralInRange<index_t>(0, 6);
  const auto vocab = in.ConsumeIntegralInRange<index_t>(1, 70);
  auto z = random_logits<T>(in, static_cast<std::size_t>(rows * vocab));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(rows));
  bool ids_ok = true;
  for (auto& id : ids) {
    id = in.ConsumeIntegralInRange<std::int32_t>(0, static_cast<std::int32_t>(vocab) - 1);
    if (in.ConsumeIntegralInRange<int>(0, 31) == 0) {
      id = in.PickValueInArray({-1, static_cast<std::int32_t>(vocab), 1 << 30});
      ids_ok = false;
    }
  }
  rlcore::logits_options o;
  o.temperature = in.PickValueInArray({1.0, 0.5, 2.0, 0.25, 4.0});
  const bool mask_vocab = in.ConsumeIntegralInRange<int>(0, 7) == 0; // -inf entries
  bool nonfinite = false;
  if (mask_vocab) {
    for (index_t r = 0; r < rows; ++r) {
      for (index_t j = 0; j < vocab; ++j) {
        if (j != ids[static_cast<std::size_t>(r)] && in.ConsumeBool()) {
          z[static_cast<std::size_t>(r * vocab + j)] = -std::numeric_limits<T>::infinity();
          nonfinite = true;
        }
      }
    }
    o.nonfinite_logits = in.ConsumeBool() ? rlcore::nonfinite_logits_policy::propagate
                                          : rlcore::nonfinite_logits_policy::error;
  }
  const auto logits = rlcore::make_matrix_view(z.data(), rows, vocab);
  std::vector<T> lp(static_cast<std::size_t>(rows), T(7));
  std::vector<T> h(static_cast<std::size_t>(rows), T(7));
  const bool ok = succeeds_or_invalid([&] { rlcore::token_log_probs(logits, ids, lp, h, o); });
  const bool expect_ok =
      ids_ok && (!nonfinite || o.nonfinite_logits == rlcore::nonfinite_logits_policy::propagate);
  check(ok == expect_ok, "token_log_probs: bad id or non-finite logits <=> invalid_argument");
  if (!ok) {
    return;
  }
  const double log_v = std::log(static_cast<double>(vocab));
  const double unit = std::numeric_limits<T>::epsilon();
  for (index_t r = 0; r < rows; ++r) {
    const double l = lp[static_cast<std::size_t>(r)];
    const double e = h[static_cast<std::size_t>(r)];
    check(std::isfinite(l) && l <= 0, "log-prob finite and <= 0", l);
    check(std::isfinite(e) && e >= 0 && e <= log_v * (1 + 64 * unit) + 64 * unit,
          "entropy in [0, log V]", e);
  }
  // Backward with upstream gradients g_lp, g_H: rows finite, summing to 0.
  std::vector<T> g_lp(static_cast<std::size_t>(rows));
  std::vector<T> g_h(static_cast<std::size_t>(rows));
  std::vector<double> scale(static_cast<std::size_t>(rows));
  for (std::size_t r = 0; r < g_lp.size(); ++r) {
    g_lp[r] = static_cast<T>(rlcore_fuzz::finite_value(in, 1e4));
    g_h[r] = static_cast<T>(rlcore_fuzz::finite_value(in, 1e4));
    scale[r] =
        (std::fabs(double(g_lp[r])) + std::fabs(double(g_h[r])) * (2 + 2 * log_v)) / o.temperature;
  }
  std::vector<T> grad(z.size(), T(3));
  auto grad_view = rlcore::make_matrix_view(grad.data(), rows, vocab);
  rlcore::token_log_probs_backward(logits, ids, g_lp, g_h, grad_view, o);
  check_gradient_rows(grad, rows, vocab, scale, "log-prob/entropy gradient finite");
}

template <class T>
void fuzz_kl(FuzzedDataProvider& in) {
  const auto rows = in.ConsumeIntegralInRange<index_t>(0, 6);
  const auto vocab = in.ConsumeIntegralInRange<index_t>(1, 70);
  // Logits up to the bf16 maximum in float too: a KL gradient beyond the float range (|log q_j| ~
  // 2 max|x| / tau) saturates at +-float max (checked in check_gradient_rows).
  const auto z = random_logits<T>(in, static_cast<std::size_t>(rows * vocab));
  auto ref = random_logits<T>(in, static_cast<std::size_t>(rows * vocab));
  const bool nan_ref = !ref.empty() && in.ConsumeIntegralInRange<int>(0, 15) == 0;
  if (nan_ref) {
    ref[in.ConsumeIntegralInRange<std::size_t>(0, ref.size() - 1)] =
        std::numeric_limits<T>::quiet_NaN();
  }
  rlcore::logits_options o;
  o.temperature = in.PickValueInArray({1.0, 0.5, 2.0, 0.25, 4.0});
  const auto logits = rlcore::make_matrix_view(z.data(), rows, vocab);
  const auto ref_logits = rlcore::make_matrix_view(ref.data(), rows, vocab);
  std::vector<T> kl(static_cast<std::size_t>(rows), T(7));
  const bool ok =
      succeeds_or_invalid([&] { rlcore::full_kl_from_logits(logits, ref_logits, kl, o); });
  check(ok == !nan_ref, "full_kl_from_logits: NaN ref logits <=> invalid_argument");
  if (!ok) {
    return;
  }
  std::vector<T> g(static_cast<std::size_t>(rows));
  std::vector<double> scale(static_cast<std::size_t>(rows));
  for (std::size_t r = 0; r < kl.size(); ++r) {
    check(std::isfinite(double(kl[r])) && kl[r] >= 0, "KL finite and >= 0", kl[r]);
    g[r] = static_cast<T>(rlcore_fuzz::finite_value(in, 1e4));
    // |p_j (log p_j - log q_j - KL)|, summed: bounded by (max |log q| + KL + 1) per unit of g.
    double worst_log_q = 0;
    for (index_t j = 0; j < vocab; ++j) {
      const double x = ref[r * static_cast<std::size_t>(vocab) + static_cast<std::size_t>(j)];
      worst_log_q = std::fmax(worst_log_q, std::fabs(x));
    }
    scale[r] = std::fabs(double(g[r]))
               * (2 * worst_log_q / o.temperature + double(kl[r]) + 2
                  + std::log(static_cast<double>(vocab)))
               / o.temperature;
  }
  std::vector<T> grad(z.size(), T(3));
  auto grad_view = rlcore::make_matrix_view(grad.data(), rows, vocab);
  rlcore::full_kl_from_logits_backward(logits, ref_logits, g, grad_view, o);
  check_gradient_rows(grad, rows, vocab, scale, "KL gradient finite");
}

// Layout form: masked slots hold NaN logits, must not be read, and get 0 / a zero gradient row.
void fuzz_layout_form(FuzzedDataProvider& in) {
  const auto b = rlcore_fuzz::random_batch(in);
  const auto vocab = in.ConsumeIntegralInRange<index_t>(1, 40);
  const auto slots = static_cast<index_t>(b.mask.size());
  auto z = random_logits<float>(in, static_cast<std::size_t>(slots * vocab));
  std::vector<float> ids(b.mask.size());
  for (std::size_t k = 0; k < b.mask.size(); ++k) {
    ids[k] = static_cast<float>(in.ConsumeIntegralInRange<index_t>(0, vocab - 1));
    if (b.mask[k] == 0) {
      ids[k] = -5; // an invalid id at a masked slot is never read
      for (index_t j = 0; j < vocab; ++j) {
        z[k * static_cast<std::size_t>(vocab) + static_cast<std::size_t>(j)] =
            std::numeric_limits<float>::quiet_NaN();
      }
    }
  }
  std::vector<std::int64_t> int_ids(ids.size());
  for (std::size_t k = 0; k < ids.size(); ++k) {
    int_ids[k] = static_cast<std::int64_t>(ids[k]);
  }
  rlcore_fuzz::with_layout(b, [&](const auto& layout, const auto&, auto make) {
    const auto logits = rlcore::make_matrix_view(z.data(), slots, vocab);
    std::vector<double> lp(b.mask.size(), 9.0);
    std::vector<double> h(b.mask.size(), 9.0);
    rlcore::token_log_probs(layout, logits, make(int_ids), make(lp), make(h));
    for (std::size_t k = 0; k < lp.size(); ++k) {
      if (b.mask[k] == 0) {
        check(lp[k] == 0 && h[k] == 0, "masked slot log-prob and entropy 0");
      } else {
        check(std::isfinite(lp[k]) && lp[k] <= 0, "layout log-prob finite and <= 0", lp[k]);
        check(std::isfinite(h[k]) && h[k] >= 0, "layout entropy finite and >= 0", h[k]);
      }
    }
    std::vector<double> g(b.mask.size(), 1.0);
    std::vector<float> grad(z.size(), 3.0f);
    auto grad_view = rlcore::make_matrix_view(grad.data(), slots, vocab);
    rlcore::token_log_probs_backward(layout, logits, make(int_ids), make(g), grad_view);
    for (std::size_t k = 0; k < b.mask.size(); ++k) {
      for (index_t j = 0; j < vocab; ++j) {
        const float x = grad[k * static_cast<std::size_t>(vocab) + static_cast<std::size_t>(j)];
        check(std::isfinite(x), "layout gradient finite", x);
        if (b.mask[k] == 0) {
          check(x == 0.0f, "masked slot gradient row 0", x);
        }
      }
    }
  });
}

// The policy loss straight from logits: every loss form, KL and entropy bonus; loss finite,
// gradient rows finite and summing to 0, masked rows (NaN logits) zero.
void fuzz_policy_from_logits(FuzzedDataProvider& in) {
  const auto b = rlcore_fuzz::random_batch(in);
  const auto vocab = in.ConsumeIntegralInRange<index_t>(1, 24);
  const auto slots = static_cast<index_t>(b.mask.size());
  auto z = random_logits<float>(in, static_cast<std::size_t>(slots * vocab), 1e4);
  std::vector<std::int64_t> ids(b.mask.size());
  for (std::size_t k = 0; k < ids.size(); ++k) {
    ids[k] = in.ConsumeIntegralInRange<index_t>(0, vocab - 1);
    if (b.mask[k] == 0) {
      for (index_t j = 0; j < vocab; ++j) {
        z[k * static_cast<std::size_t>(vocab) + static_cast<std::size_t>(j)] =
            std::numeric_limits<float>::quiet_NaN();
      }
    }
  }
  auto old = rlcore_fuzz::finite_values(in, b.mask.size(), 1e4);
  auto adv = rlcore_fuzz::finite_values(in, b.mask.size(), 1e4);
  auto ref = rlcore_fuzz::finite_values(in, b.mask.size(), 1e4);
  rlcore::policy_options o;
  o.loss = in.PickValueInArray({rlcore::policy_loss::clipped, rlcore::policy_loss::gspo,
                                rlcore::policy_loss::gmpo, rlcore::policy_loss::cispo,
                                rlcore::policy_loss::sapo, rlcore::policy_loss::reinforce});
  o.kl_beta = in.PickValueInArray({0.0, 0.04});
  o.entropy_coef = in.PickValueInArray({0.0, 0.01});
  rlcore::logits_options lo;
  lo.temperature = in.PickValueInArray({1.0, 0.5, 2.0});
  rlcore_fuzz::with_layout(b, [&](const auto& layout, const auto&, auto make) {
    const auto logits = rlcore::make_matrix_view(z.data(), slots, vocab);
    std::vector<float> grad(z.size(), 3.0f);
    auto grad_view = rlcore::make_matrix_view(grad.data(), slots, vocab);
    const auto r = rlcore::policy_loss_from_logits(layout, logits, make(ids), make(old), make(adv),
                                                   make(ref), grad_view, o, lo);
    check(std::isfinite(r.loss), "policy loss from logits finite", r.loss);
    std::vector<double> scale(b.mask.size(), 0.0);
    for (std::size_t k = 0; k < b.mask.size(); ++k) {
      // |d loss / d lp| <= |A| e^20 (clamped ratio) + beta e^20 + coef-scaled entropy terms.
      scale[k] = (std::fabs(adv[k]) + 1) * std::exp(20.0) * (2 + std::log(double(vocab))) / 0.5;
      for (index_t j = 0; j < vocab; ++j) {
        const float x = grad[k * static_cast<std::size_t>(vocab) + static_cast<std::size_t>(j)];
        if (b.mask[k] == 0) {
          check(x == 0.0f, "masked logits row gradient 0", x);
        }
      }
    }
    check_gradient_rows(grad, slots, vocab, scale, "policy-from-logits gradient finite");
  });
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
  case 0:
    fuzz_token<float>(in);
    break;
  case 1:
    fuzz_token<double>(in);
    break;
  case 2:
    fuzz_kl<float>(in);
    break;
  case 3:
    fuzz_kl<double>(in);
    break;
  case 4:
    fuzz_layout_form(in);
    break;
  default:
    fuzz_policy_from_logits(in);
    break;
  }
  return 0;
}
