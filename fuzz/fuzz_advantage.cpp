// Fuzz target: every advantage estimator and reward utility on random batches (padded and packed,
// interior mask holes, all-masked rows, G = 1, empty offset groups) with finite values (scores,
// whitened values and step rewards over the whole double range, near-equal huge scores; rewards
// summed into returns up to 1e30), plus one injected fault per input at times (a wrong sequence
// count, a per-token tensor of the wrong shape, an option out of range) that must raise
// rlcore::invalid_argument.
// Without a fault the call must succeed and its outputs must be finite, exactly 0 at masked
// tokens, and satisfy the estimator's invariant:
// The oracles compute in long double (no overflow at 1.8e308); sums of centred values are checked
// against the rounding of the group's spread (max - min), not of its magnitude: near-equal huge
// scores must centre accurately. Values saturated at the double maximum (Dr. GRPO, RLOO, OPO,
// mean-only whitening of scores near +-max) are checked to be saturations of larger true values.
//   GRPO      group sums of advantages ~ 0 (mean centring); |a| <= (G - 1) / sqrt(G) under group
//             scaling; identical scores -> exactly 0; G = 1 -> 0 (or the raw reward by option)
//   RLOO      group sums ~ 0;  OPO  length-weighted group sums ~ 0;  pass@k  one nonzero >= 0 per
//             group, at the first best, equal to s_max - s_second (over std + eps)
//   GAE, REINFORCE++, ReMax, scores   equal to an independent backward loop over valid tokens
//   whitening  mean ~ 0 and variance <= 1 over valid tokens
#include "batch.hpp"

#include <rlcore/advantage/all.hpp>
#include <rlcore/advantage/reward.hpp>

#include <cfloat>
#include <cmath>
#include <cstdint>
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

constexpr double eps64 = DBL_EPSILON;
constexpr double denorm_min = std::numeric_limits<double>::denorm_min();
constexpr double largest = std::numeric_limits<double>::max();
using wide = long double; // the oracles' precision and range (x87: 64-bit mantissa, 1e4932)

enum class fault { none, sequences, tensor, option };

fault pick_fault(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 11)) {
  case 0:
    return fault::sequences;
  case 1:
    return fault::tensor;
  case 2:
    return fault::option;
  default:
    return fault::none;
  }
}

double bad_option_value(FuzzedDataProvider& in) {
  static constexpr double values[] = {-1.0, 0.0, 1.5, std::numeric_limits<double>::quiet_NaN(),
                                      std::numeric_limits<double>::infinity()};
  return in.PickValueInArray(values);
}

void check_finite(const std::vector<double>& v, const char* what) {
  for (double x : v) {
    check(std::isfinite(x), what, x);
  }
}

// Masked slots must hold exactly 0 and valid slots of row i `row_value(i, t)` when given.
void check_masked_zero(const batch& b, const std::vector<double>& out, const char* what) {
  for (index_t i = 0; i < b.n; ++i) {
    for (index_t t = 0; t < b.length(i); ++t) {
      if (!b.valid(i, t)) {
        check(out[b.slot(i, t)] == 0.0, what, out[b.slot(i, t)]);
      }
    }
  }
}

// Standard deviation of s[begin, end) in long double (finite for any finite doubles), from the
// deviations d_k = s_k - s_begin (shift invariance): exact for scores a few ulps apart, where a
// long double mean of the scores themselves would be off by 2^-11 of their spread.
wide moment_std(const std::vector<double>& s, index_t begin, index_t end, rlcore::std_kind kind) {
  if (end <= begin) {
    return 0;
  }
  const auto g = static_cast<wide>(end - begin);
  const wide shift = s[static_cast<std::size_t>(begin)];
  wide mean = 0;
  for (index_t k = begin; k < end; ++k) {
    mean += s[static_cast<std::size_t>(k)] - shift;
  }
  mean /= g;
  wide ss = 0;
  for (index_t k = begin; k < end; ++k) {
    const wide d = (s[static_cast<std::size_t>(k)] - shift) - mean;
    ss += d * d;
  }
  const wide denom = kind == rlcore::std_kind::unbiased ? g - 1 : g;
  return denom > 0 ? std::sqrt(ss / denom) : 0.0L;
}

// max - min of s[begin, end) in long double (0 for an empty range): the scale of every centred
// value of the range.
wide group_spread(const std::vector<double>& s, index_t begin, index_t end) {
  if (end <= begin) {
    return 0;
  }
  wide lo = s[static_cast<std::size_t>(begin)];
  wide hi = lo;
  for (index_t k = begin; k < end; ++k) {
    lo = std::fmin(lo, static_cast<wide>(s[static_cast<std::size_t>(k)]));
    hi = std::fmax(hi, static_cast<wide>(s[static_cast<std::size_t>(k)]));
  }
  return hi - lo;
}

double group_max_abs(const std::vector<double>& s, index_t begin, index_t end) {
  double m = 0;
  for (index_t k = begin; k < end; ++k) {
    m = std::fmax(m, std::fabs(s[static_cast<std::size_t>(k)]));
  }
  return m;
}

// The unit of the moments of values up to max_abs (math/stats.hpp): values that end below the
// denormal range of that unit round at denorm_min * unit.
double moments_unit(double max_abs) {
  return max_abs > 0x1p440 ? 0x1p600 : (max_abs < 0x1p-440 ? 0x1p-600 : 1.0);
}

// A result the library saturated at the double maximum.
bool saturated(double x) {
  return std::fabs(x) == largest;
}

bool group_constant(const std::vector<double>& s, index_t begin, index_t end) {
  for (index_t k = begin + 1; k < end; ++k) {
    if (s[static_cast<std::size_t>(k)] != s[static_cast<std::size_t>(begin)]) {
      return false;
    }
  }
  return true;
}

// Per-sequence values broadcast to valid tokens.
void check_broadcast(const batch& b, const std::vector<double>& tokens,
                     const std::vector<double>& seq, const char* what) {
  for (index_t i = 0; i < b.n; ++i) {
    for (index_t t = 0; t < b.length(i); ++t) {
      const double expected = b.valid(i, t) ? seq[static_cast<std::size_t>(i)] : 0.0;
      check(tokens[b.slot(i, t)] == expected, what, tokens[b.slot(i, t)]);
    }
  }
}

template <class Layout, class Groups>
void fuzz_grpo(FuzzedDataProvider& in, const batch& b, const Layout& layout, const Groups& groups,
               std::vector<double> scores, fault f) {
  rlcore::grpo_advantage_options o;
  o.scaling = in.PickValueInArray(
      {rlcore::grpo_scaling::group, rlcore::grpo_scaling::batch, rlcore::grpo_scaling::none});
  o.std_kind = in.ConsumeBool() ? rlcore::std_kind::unbiased : rlcore::std_kind::population;
  o.eps = in.PickValueInArray({1e-6, 1e-8, 1e-4, 1.0});
  o.singleton_group = in.ConsumeBool() ? rlcore::singleton_group_policy::zero
                                       : rlcore::singleton_group_policy::raw_reward;
  if (f == fault::option) {
    o.eps = in.ConsumeBool() ? bad_option_value(in) : -1e-6;
    if (o.eps > 0 && std::isfinite(o.eps)) {
      o.eps = 0;
    }
  }
  if (f == fault::sequences) {
    scores.resize(scores.size() + 1, 0.0);
  }
  auto buffer = make_buffer(b, f == fault::tensor);
  std::vector<double> seq(scores.size(), 7.0);
  const bool ok = succeeds_or_invalid([&] {
    const auto stats =
        rlcore::grpo_outcome_advantages(layout, scores, groups, token_tensor(b, layout, buffer), o);
    check(std::isfinite(stats.advantage_mean) && std::isfinite(stats.advantage_std),
          "grpo stats finite");
    check(stats.zero_spread_fraction >= 0 && stats.zero_spread_fraction <= 1,
          "grpo zero-spread fraction in [0, 1]", stats.zero_spread_fraction);
    (void)rlcore::grpo_outcome_sequence_advantages(scores, groups, seq, o);
  });
  check(ok == (f == fault::none), "grpo: fault <=> invalid_argument");
  if (!ok) {
    return;
  }
  check_finite(buffer.data, "grpo token advantages finite");
  check_broadcast(b, buffer.data, seq, "grpo tokens = sequence advantage, masked 0");
  const bool unbiased = o.std_kind == rlcore::std_kind::unbiased;
  const wide batch_std = moment_std(scores, 0, b.n, o.std_kind);
  const double batch_unit = moments_unit(group_max_abs(scores, 0, b.n));
  for (index_t g = 0; g < b.num_groups(); ++g) {
    const index_t begin = b.group_begin(g);
    const index_t end = b.group_end(g);
    const index_t size = end - begin;
    if (size == 0) {
      continue;
    }
    if (size == 1) {
      const double s = scores[static_cast<std::size_t>(begin)];
      const double a = seq[static_cast<std::size_t>(begin)];
      if (o.singleton_group == rlcore::singleton_group_policy::zero) {
        check(a == 0.0, "grpo singleton group -> 0", a);
      } else {
        const double expected = o.scaling == rlcore::grpo_scaling::none ? s : s / (1.0 + o.eps);
        check(std::fabs(a - expected) <= 4 * eps64 * std::fabs(expected),
              "grpo singleton raw reward", a);
      }
      continue;
    }
    if (group_constant(scores, begin, end)) {
      for (index_t k = begin; k < end; ++k) {
        check(seq[static_cast<std::size_t>(k)] == 0.0, "grpo identical scores -> exactly 0",
              seq[static_cast<std::size_t>(k)]);
      }
      continue;
    }
    wide denom = 1.0;
    double unit = moments_unit(group_max_abs(scores, begin, end));
    if (o.scaling == rlcore::grpo_scaling::group) {
      denom = moment_std(scores, begin, end, o.std_kind) + o.eps;
    } else if (o.scaling == rlcore::grpo_scaling::batch) {
      denom = batch_std + o.eps;
      unit = batch_unit;
    }
    const wide spread = group_spread(scores, begin, end);
    wide sum = 0;
    double largest_a = 0;
    bool any_saturated = false;
    for (index_t k = begin; k < end; ++k) {
      const double a = seq[static_cast<std::size_t>(k)];
      sum += a;
      largest_a = std::fmax(largest_a, std::fabs(a));
      any_saturated = any_saturated || saturated(a);
    }
    if (any_saturated) {
      // Dr. GRPO only: the true |s - mean| (<= spread) exceeds the double range.
      check(o.scaling == rlcore::grpo_scaling::none && spread > largest,
            "grpo saturation only "
            "where s - mean is beyond the double range",
            largest_a);
      continue;
    }
    const auto gsize = static_cast<wide>(size);
    // Rounding of the centred values (relative to the group's spread, however large the scores),
    // and absolute at the denormal scale of the moments' unit, over the divisor.
    const wide tolerance =
        64 * gsize * (eps64 * spread + static_cast<wide>(denorm_min) * unit) / denom
        + 64 * gsize * static_cast<wide>(denorm_min);
    check(std::fabs(sum) <= tolerance, "grpo group advantages sum to 0", static_cast<double>(sum));
    if (o.scaling == rlcore::grpo_scaling::group) {
      const double bound = unbiased ? (static_cast<double>(size) - 1) / std::sqrt(gsize)
                                    : std::sqrt(static_cast<double>(size) - 1);
      check(largest_a <= bound * (1 + 1e-9) + tolerance, "grpo |a| <= (G - 1) / sqrt(G)",
            largest_a);
    }
  }
}

template <class Layout, class Groups>
void fuzz_rloo_opo(FuzzedDataProvider& in, const batch& b, const Layout& layout,
                   const Groups& groups, std::vector<double> scores, fault f) {
  const bool opo = in.ConsumeBool();
  if (f == fault::sequences || f == fault::option) {
    scores.resize(scores.size() - 1);
  }
  auto buffer = make_buffer(b, f == fault::tensor);
  const bool ok = succeeds_or_invalid([&] {
    if (opo) {
      (void)rlcore::opo_advantages(layout, scores, groups, token_tensor(b, layout, buffer));
    } else {
      (void)rlcore::rloo_advantages(layout, scores, groups, token_tensor(b, layout, buffer));
    }
  });
  check(ok == (f == fault::none), "rloo/opo: fault <=> invalid_argument");
  if (!ok) {
    return;
  }
  check_finite(buffer.data, "rloo/opo advantages finite");
  check_masked_zero(b, buffer.data, "rloo/opo masked -> 0");
  std::vector<double> seq(static_cast<std::size_t>(b.n), 0.0);
  for (index_t i = 0; i < b.n; ++i) {
    for (index_t t = 0; t < b.length(i); ++t) {
      if (b.valid(i, t)) {
        seq[static_cast<std::size_t>(i)] = buffer.data[b.slot(i, t)];
      }
    }
  }
  for (index_t g = 0; g < b.num_groups(); ++g) {
    const index_t begin = b.group_begin(g);
    const index_t end = b.group_end(g);
    wide sum = 0;
    double weight = 0;
    bool observed = true; // an all-masked row shows no advantage (RLOO needs every member)
    for (index_t k = begin; k < end; ++k) {
      observed = observed && (opo || b.valid_count(k) > 0);
    }
    if (!observed) {
      continue;
    }
    bool any_saturated = false;
    for (index_t k = begin; k < end; ++k) {
      const double w = opo ? static_cast<double>(b.valid_count(k)) : 1.0;
      sum += w * static_cast<wide>(seq[static_cast<std::size_t>(k)]);
      weight += w;
      any_saturated = any_saturated || saturated(seq[static_cast<std::size_t>(k)]);
    }
    // Rounding relative to the group's spread (the scale of s - mean), not to |s|.
    const wide spread = group_spread(scores, begin, end);
    if (any_saturated) {
      // |a| <= G / (G - 1) * spread (RLOO) or spread (OPO): only a true value beyond the range.
      check(2 * spread > largest, "rloo/opo saturation only beyond the double range");
      continue;
    }
    const wide tolerance = 64 * (weight + 1) * static_cast<wide>(end - begin + 1) * eps64 * spread
                           + 64 * (weight + 1) * static_cast<wide>(denorm_min);
    check(std::fabs(sum) <= tolerance, opo ? "opo length-weighted sum 0" : "rloo group sum 0",
          static_cast<double>(sum));
    if (end - begin == 1) {
      check(seq[static_cast<std::size_t>(begin)] == 0.0, "rloo/opo singleton -> 0");
    }
  }
}

template <class Layout, class Groups>
void fuzz_pass_at_k(FuzzedDataProvider& in, const batch& b, const Layout& layout,
                    const Groups& groups, std::vector<double> scores, fault f) {
  rlcore::pass_at_k_options o;
  o.divide_by_std = in.ConsumeBool();
  o.std_kind = in.ConsumeBool() ? rlcore::std_kind::unbiased : rlcore::std_kind::population;
  o.eps = in.PickValueInArray({1e-6, 1e-8, 1.0});
  if (f == fault::option) {
    o.eps = bad_option_value(in);
    if (o.eps > 0 && std::isfinite(o.eps)) {
      o.eps = -o.eps;
    }
  }
  if (f == fault::sequences) {
    scores.push_back(1.0);
  }
  bool singleton = false;
  for (index_t g = 0; g < b.num_groups(); ++g) {
    singleton = singleton || b.group_end(g) - b.group_begin(g) == 1;
  }
  auto buffer = make_buffer(b, f == fault::tensor);
  const bool ok = succeeds_or_invalid([&] {
    (void)rlcore::pass_at_k_advantages(layout, scores, groups, token_tensor(b, layout, buffer), o);
  });
  check(ok == (f == fault::none && !singleton), "pass@k: fault or G = 1 <=> invalid_argument");
  if (!ok) {
    return;
  }
  check_finite(buffer.data, "pass@k finite");
  check_masked_zero(b, buffer.data, "pass@k masked -> 0");
  for (index_t g = 0; g < b.num_groups(); ++g) {
    const index_t begin = b.group_begin(g);
    const index_t end = b.group_end(g);
    if (end == begin) {
      continue;
    }
    index_t best = begin;
    for (index_t k = begin + 1; k < end; ++k) {
      if (scores[static_cast<std::size_t>(k)] > scores[static_cast<std::size_t>(best)]) {
        best = k;
      }
    }
    double second = -std::numeric_limits<double>::infinity();
    for (index_t k = begin; k < end; ++k) {
      if (k != best) {
        second = std::fmax(second, scores[static_cast<std::size_t>(k)]);
      }
    }
    wide exact = static_cast<wide>(scores[static_cast<std::size_t>(best)]) - second;
    if (o.divide_by_std) {
      exact /= moment_std(scores, begin, end, o.std_kind) + o.eps;
    }
    // beyond the double range (raw difference of scores near +-max): saturated
    const double expected = exact > largest ? largest : static_cast<double>(exact);
    for (index_t k = begin; k < end; ++k) {
      for (index_t t = 0; t < b.length(k); ++t) {
        if (!b.valid(k, t)) {
          continue;
        }
        const double a = buffer.data[b.slot(k, t)];
        if (k != best) {
          check(a == 0.0, "pass@k: only the best response is nonzero", a);
        } else {
          check(a >= 0 && std::fabs(a - expected) <= 1e-9 * expected + 1e-300,
                "pass@k best = (s_max - s_second) [/ (std + eps)]", a);
        }
      }
    }
  }
}

// Reference backward loop: carry c over valid tokens, out(t) = r_t + gamma * c (masked: 0).
std::vector<double> reference_returns(const batch& b, const std::vector<double>& rewards,
                                      double gamma, const std::vector<double>* baseline) {
  std::vector<double> out(b.mask.size(), 0.0);
  for (index_t i = 0; i < b.n; ++i) {
    double carry = 0;
    bool last = true;
    for (index_t t = b.length(i) - 1; t >= 0; --t) {
      if (!b.valid(i, t)) {
        continue;
      }
      double r = rewards[b.slot(i, t)];
      if (last && baseline != nullptr) {
        r -= (*baseline)[static_cast<std::size_t>(i)];
      }
      last = false;
      carry = r + gamma * carry;
      out[b.slot(i, t)] = carry;
    }
  }
  return out;
}

double row_scale(const batch& b, index_t i, const std::vector<double>& x) {
  double m = 0;
  for (index_t t = 0; t < b.length(i); ++t) {
    if (b.valid(i, t)) {
      m += std::fabs(x[b.slot(i, t)]);
    }
  }
  return m;
}

void check_close_rows(const batch& b, const std::vector<double>& got,
                      const std::vector<double>& expected, const std::vector<double>& scale_a,
                      const std::vector<double>* scale_b, const char* what) {
  for (index_t i = 0; i < b.n; ++i) {
    const double scale =
        row_scale(b, i, scale_a) + (scale_b != nullptr ? row_scale(b, i, *scale_b) : 0.0);
    for (index_t t = 0; t < b.length(i); ++t) {
      const double d = std::fabs(got[b.slot(i, t)] - expected[b.slot(i, t)]);
      check(d <= 64 * eps64 * static_cast<double>(b.length(i) + 1) * scale, what, d);
    }
  }
}

index_t total_valid(const batch& b) {
  index_t c = 0;
  for (index_t i = 0; i < b.n; ++i) {
    c += b.valid_count(i);
  }
  return c;
}

// Whitened values: mean ~ 0 and variance (of the chosen kind) <= 1 over the valid tokens.
// `input` holds the values before whitening (or a reference for them): the rounding error of
// x - mean is relative to max |input|, then divided by sqrt(var(input) + eps).
void check_whitened(const batch& b, const std::vector<double>& x, rlcore::whiten_kind kind,
                    const std::vector<double>& input, double eps, const char* what) {
  const auto n = static_cast<wide>(total_valid(b));
  if (n == 0 || kind == rlcore::whiten_kind::none) {
    return;
  }
  wide sum = 0;
  wide in_lo = std::numeric_limits<wide>::infinity();
  wide in_hi = -in_lo;
  bool any_saturated = false;
  for (index_t i = 0; i < b.n; ++i) {
    for (index_t t = 0; t < b.length(i); ++t) {
      if (b.valid(i, t)) {
        sum += x[b.slot(i, t)];
        in_lo = std::fmin(in_lo, static_cast<wide>(input[b.slot(i, t)]));
        in_hi = std::fmax(in_hi, static_cast<wide>(input[b.slot(i, t)]));
        any_saturated = any_saturated || saturated(x[b.slot(i, t)]);
      }
    }
  }
  const wide in_spread = in_hi - in_lo;
  if (any_saturated) {
    // mean-only whitening of values near +-max: x - mean beyond the double range
    check(kind == rlcore::whiten_kind::mean_only && in_spread > largest,
          "whiten saturation only where x - mean is beyond the double range");
    return;
  }
  // Deviations from the first valid input (shift invariance, exact for near-equal values).
  wide shift = 0;
  for (index_t i = b.n - 1; i >= 0; --i) {
    for (index_t t = b.length(i) - 1; t >= 0; --t) {
      shift = b.valid(i, t) ? static_cast<wide>(input[b.slot(i, t)]) : shift;
    }
  }
  wide in_shifted_mean = 0;
  for (index_t i = 0; i < b.n; ++i) {
    for (index_t t = 0; t < b.length(i); ++t) {
      if (b.valid(i, t)) {
        in_shifted_mean += (input[b.slot(i, t)] - shift) / n;
      }
    }
  }
  wide in_ss = 0;
  for (index_t i = 0; i < b.n; ++i) {
    for (index_t t = 0; t < b.length(i); ++t) {
      if (b.valid(i, t)) {
        const wide d = (input[b.slot(i, t)] - shift) - in_shifted_mean;
        in_ss += d * d;
      }
    }
  }
  const wide in_var = in_ss / (kind == rlcore::whiten_kind::unbiased ? n - 1 : n);
  const wide divisor = kind == rlcore::whiten_kind::mean_only ? 1.0L : std::sqrt(in_var + eps);
  const wide mean = sum / n;
  // Rounding of x - mean relative to the spread of the values (not their magnitude), plus the
  // denormal scale of the moments' unit.
  const double unit =
      moments_unit(static_cast<double>(std::fmax(std::fabs(in_lo), std::fabs(in_hi))));
  check(std::fabs(mean)
            <= 64 * n * (eps64 * in_spread + denorm_min * std::fmax(unit, 1.0)) / divisor
                   + 64 * n * denorm_min,
        what, static_cast<double>(mean));
  if (kind == rlcore::whiten_kind::mean_only) {
    return;
  }
  wide ss = 0;
  for (index_t i = 0; i < b.n; ++i) {
    for (index_t t = 0; t < b.length(i); ++t) {
      if (b.valid(i, t)) {
        ss += (x[b.slot(i, t)] - mean) * (x[b.slot(i, t)] - mean);
      }
    }
  }
  const wide var = ss / (kind == rlcore::whiten_kind::unbiased ? n - 1 : n);
  check(var <= 1 + 1e-9, "whitened variance <= 1", static_cast<double>(var));
}

rlcore::whiten_kind pick_whiten_kind(FuzzedDataProvider& in) {
  return in.PickValueInArray({rlcore::whiten_kind::unbiased, rlcore::whiten_kind::population,
                              rlcore::whiten_kind::mean_only, rlcore::whiten_kind::none});
}

double pick_unit(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
  case 0:
    return 0.0;
  case 1:
    return 1.0;
  case 2:
    return 0.99;
  default:
    return in.ConsumeProbability<double>();
  }
}

template <class Layout, class Groups>
void fuzz_returns(FuzzedDataProvider& in, const batch& b, const Layout& layout,
                  const Groups& groups, const std::vector<double>& rewards, fault f) {
  const int which = in.ConsumeIntegralInRange<int>(0, 3); // gae, reinforce++, baseline, remax
  const double gamma = f == fault::option ? bad_option_value(in) : pick_unit(in);
  const bool gamma_ok = gamma >= 0 && gamma <= 1;
  const double lambda = pick_unit(in);
  const auto kind = pick_whiten_kind(in);
  const bool whiten_gae = in.ConsumeBool();
  auto values = rlcore_fuzz::finite_values(in, b.mask.size());
  auto baselines = rlcore_fuzz::finite_values(in, static_cast<std::size_t>(b.n));
  if (f == fault::sequences) {
    baselines.push_back(0.0);
  }
  auto adv = make_buffer(b, f == fault::tensor);
  auto ret = make_buffer(b, false);
  const index_t valid = total_valid(b);
  bool one_token_unbiased = valid == 1 && kind == rlcore::whiten_kind::unbiased;
  // Only ReMax reads a per-sequence vector (baseline_rewards).
  const bool expect_ok =
      f == fault::none || (f == fault::option && gamma_ok) || (f == fault::sequences && which != 3);
  const bool ok = succeeds_or_invalid([&] {
    switch (which) {
    case 0: {
      rlcore::gae_options o;
      o.gamma = gamma;
      o.lambda = lambda;
      o.whiten = whiten_gae;
      o.whiten_kind = kind;
      rlcore::gae_advantages(layout, input_tensor(b, layout, rewards),
                             input_tensor(b, layout, values), token_tensor(b, layout, adv),
                             token_tensor(b, layout, ret), o);
      break;
    }
    case 1:
      rlcore::reinforce_plus_plus_advantages(
          layout, input_tensor(b, layout, rewards), token_tensor(b, layout, adv),
          token_tensor(b, layout, ret), rlcore::reinforce_options{gamma, kind, 1e-8});
      break;
    case 2:
      rlcore::reinforce_plus_plus_baseline_advantages(layout, input_tensor(b, layout, rewards),
                                                      groups, token_tensor(b, layout, adv),
                                                      rlcore::reinforce_options{gamma, kind, 1e-8});
      break;
    default:
      rlcore::remax_advantages(layout, input_tensor(b, layout, rewards), baselines,
                               token_tensor(b, layout, adv),
                               rlcore::remax_options{gamma, kind, 1e-8});
      break;
    }
  });
  if (which == 0) {
    one_token_unbiased = one_token_unbiased && whiten_gae;
  }
  check(ok == (expect_ok && !one_token_unbiased), "returns: fault <=> invalid_argument");
  if (!ok) {
    return;
  }
  check_finite(adv.data, "advantages finite");
  check_masked_zero(b, adv.data, "advantages masked -> 0");
  const bool whitened = which == 0 ? whiten_gae : true;
  if (which == 0) {
    // GAE reference: delta_t = r_t + gamma V_next - V_t, A_t = delta_t + gamma lambda A_next.
    std::vector<double> a_ref(b.mask.size(), 0.0);
    for (index_t i = 0; i < b.n; ++i) {
      double next_v = 0;
      double next_a = 0;
      for (index_t t = b.length(i) - 1; t >= 0; --t) {
        if (!b.valid(i, t)) {
          continue;
        }
        const double v = values[b.slot(i, t)];
        const double a = rewards[b.slot(i, t)] + gamma * next_v - v + gamma * lambda * next_a;
        a_ref[b.slot(i, t)] = a;
        next_v = v;
        next_a = a;
      }
    }
    check_finite(ret.data, "gae returns finite");
    check_masked_zero(b, ret.data, "gae returns masked -> 0");
    std::vector<double> ret_ref(a_ref);
    for (index_t i = 0; i < b.n; ++i) {
      for (index_t t = 0; t < b.length(i); ++t) {
        if (b.valid(i, t)) {
          ret_ref[b.slot(i, t)] += values[b.slot(i, t)];
        }
      }
    }
    check_close_rows(b, ret.data, ret_ref, rewards, &values, "gae returns = reference A + V");
    if (!whiten_gae) {
      check_close_rows(b, adv.data, a_ref, rewards, &values, "gae advantages = reference");
    } else {
      check_whitened(b, adv.data, kind, a_ref, 1e-8, "gae whitened mean 0");
    }
    return;
  }
  // ReMax subtracts the given baseline, REINFORCE++-baseline the group mean of the scores.
  std::vector<double> group_means(static_cast<std::size_t>(b.n), 0.0);
  for (index_t g = 0; g < b.num_groups() && which == 2; ++g) {
    double mean = 0;
    for (index_t k = b.group_begin(g); k < b.group_end(g); ++k) {
      for (index_t t = 0; t < b.length(k); ++t) {
        mean += b.valid(k, t) ? rewards[b.slot(k, t)] : 0.0;
      }
    }
    mean /= static_cast<double>(b.group_end(g) - b.group_begin(g));
    for (index_t k = b.group_begin(g); k < b.group_end(g); ++k) {
      group_means[static_cast<std::size_t>(k)] = mean;
    }
  }
  const auto ref = reference_returns(
      b, rewards, gamma, which == 3 ? &baselines : (which == 2 ? &group_means : nullptr));
  if (which == 1) {
    check_finite(ret.data, "reinforce++ returns finite");
    check_close_rows(b, ret.data, ref, rewards, nullptr, "reinforce++ returns = reference");
  }
  if (kind == rlcore::whiten_kind::none && which != 2) {
    std::vector<double> baseline_tokens(b.mask.size(), 0.0); // |b_i| at every slot of row i
    for (index_t i = 0; i < b.n && which == 3; ++i) {
      for (index_t t = 0; t < b.length(i); ++t) {
        baseline_tokens[b.slot(i, t)] = baselines[static_cast<std::size_t>(i)];
      }
    }
    check_close_rows(b, adv.data, ref, rewards, &baseline_tokens,
                     "unwhitened advantages = reference returns");
  } else if (whitened) {
    check_whitened(b, adv.data, kind, ref, 1e-8, "whitened mean 0");
  }
}

template <class Layout>
void fuzz_whiten(FuzzedDataProvider& in, const batch& b, const Layout& layout,
                 const std::vector<double>& x, fault f) {
  rlcore::whiten_options o;
  o.kind = pick_whiten_kind(in);
  o.eps = in.PickValueInArray({1e-8, 1e-12, 1.0});
  if (f == fault::option) {
    o.eps = -1.0;
  }
  auto buffer = make_buffer(b, f == fault::tensor);
  std::copy(x.begin(), x.end(), buffer.data.begin());
  const bool ok =
      succeeds_or_invalid([&] { rlcore::whiten(layout, token_tensor(b, layout, buffer), o); });
  const bool one_unbiased = total_valid(b) == 1 && o.kind == rlcore::whiten_kind::unbiased;
  const bool expect_ok = (f == fault::none || f == fault::sequences) && !one_unbiased;
  check(ok == expect_ok, "whiten: fault <=> invalid_argument");
  if (!ok) {
    return;
  }
  check_finite(buffer.data, "whiten finite");
  check_masked_zero(b, buffer.data, "whiten masked -> 0");
  check_whitened(b, buffer.data, o.kind, x, o.eps, "whiten mean 0");
}

template <class Layout, class Groups>
void fuzz_process(FuzzedDataProvider& in, const batch& b, const Layout& layout,
                  const Groups& groups, const std::vector<double>& rewards, fault f) {
  auto ends = rlcore_fuzz::mask_values(in, b.mask.size());
  std::vector<double> ends_d(ends.begin(), ends.end());
  rlcore::grpo_process_options o;
  o.std_kind = in.ConsumeBool() ? rlcore::std_kind::unbiased : rlcore::std_kind::population;
  if (f == fault::option) {
    o.eps = 0;
  }
  auto buffer = make_buffer(b, f == fault::tensor);
  const bool ok = succeeds_or_invalid([&] {
    rlcore::grpo_process_advantages(layout, input_tensor(b, layout, rewards),
                                    input_tensor(b, layout, ends_d), groups,
                                    token_tensor(b, layout, buffer), o);
  });
  check(ok == (f == fault::none || f == fault::sequences), "process: fault <=> invalid_argument");
  if (!ok) {
    return;
  }
  check_finite(buffer.data, "process advantages finite");
  check_masked_zero(b, buffer.data, "process masked -> 0");
  for (index_t i = 0; i < b.n; ++i) {
    bool after_last_step = true;
    for (index_t t = b.length(i) - 1; t >= 0; --t) {
      if (b.valid(i, t) && ends[b.slot(i, t)] != 0) {
        after_last_step = false;
      }
      if (after_last_step) {
        check(buffer.data[b.slot(i, t)] == 0.0, "process: tokens after the last step -> 0");
      }
    }
  }
}

template <class Layout, class Groups>
void fuzz_scores_and_rewards(FuzzedDataProvider& in, const batch& b, const Layout& layout,
                             const Groups& groups, const std::vector<double>& rewards, fault f) {
  std::vector<double> scores(static_cast<std::size_t>(b.n) + (f == fault::sequences ? 1 : 0));
  const bool ok = succeeds_or_invalid(
      [&] { rlcore::sequence_scores(layout, input_tensor(b, layout, rewards), scores); });
  check(ok == (f != fault::sequences), "sequence_scores: fault <=> invalid_argument");
  if (ok) {
    for (index_t i = 0; i < b.n; ++i) {
      double s = 0;
      double scale = 0;
      for (index_t t = 0; t < b.length(i); ++t) {
        if (b.valid(i, t)) {
          s += rewards[b.slot(i, t)];
          scale += std::fabs(rewards[b.slot(i, t)]);
        }
      }
      const double got = scores[static_cast<std::size_t>(i)];
      check(std::fabs(got - s) <= 8 * eps64 * scale, "sequence score = sum of valid rewards", got);
    }
  }
  // Reward columns with missing (NaN) entries, weighted and GDPO-normalised sums.
  const auto k = in.ConsumeIntegralInRange<index_t>(1, 3);
  auto columns = rlcore_fuzz::finite_values(in, static_cast<std::size_t>(b.n * k), 1e300);
  bool any_nan = false;
  for (auto& c : columns) {
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0) {
      c = std::numeric_limits<double>::quiet_NaN();
      any_nan = true;
    }
  }
  auto weights = rlcore_fuzz::finite_values(in, static_cast<std::size_t>(k), 1e4);
  const auto cols = rlcore::make_matrix_view(columns.data(), b.n, k);
  const bool skip = in.ConsumeBool();
  std::vector<double> sums(static_cast<std::size_t>(b.n));
  const bool sum_ok = succeeds_or_invalid([&] {
    rlcore::reward_sum_options o;
    o.nan_policy = skip ? rlcore::nan_policy::skip_column : rlcore::nan_policy::error;
    rlcore::weighted_reward_sum(cols, weights, sums, o);
  });
  check(sum_ok == (skip || !any_nan), "weighted_reward_sum: NaN under error policy <=> error");
  if (sum_ok) {
    check_finite(sums, "weighted reward sums finite");
  }
  std::vector<double> normalized(static_cast<std::size_t>(b.n));
  const bool norm_ok = succeeds_or_invalid([&] {
    rlcore::normalized_reward_sum_options o;
    o.nan_policy = skip ? rlcore::nan_policy::skip_column : rlcore::nan_policy::error;
    o.normalize_batch = in.ConsumeBool();
    rlcore::normalized_reward_sum(cols, weights, groups, normalized, o);
  });
  check(norm_ok == (skip || !any_nan), "normalized_reward_sum: NaN under error policy <=> error");
  if (norm_ok) {
    check_finite(normalized, "normalized reward sums finite");
  }
  // Zero-spread filter against the oracle.
  std::vector<int> flags(static_cast<std::size_t>(b.num_groups()), -1);
  const auto group_scores = rlcore_fuzz::finite_values(in, static_cast<std::size_t>(b.n));
  const index_t flagged = rlcore::zero_spread_groups(group_scores, groups, flags);
  index_t expected_flagged = 0;
  for (index_t g = 0; g < b.num_groups(); ++g) {
    const bool constant = b.group_end(g) > b.group_begin(g)
                          && group_constant(group_scores, b.group_begin(g), b.group_end(g));
    expected_flagged += constant ? 1 : 0;
    check(flags[static_cast<std::size_t>(g)] == (constant ? 1 : 0), "zero_spread_groups flag");
  }
  check(flagged == expected_flagged, "zero_spread_groups count");
  // DAPO overlong penalty in [-1, 0] and the truncated-response mask.
  std::vector<double> lengths(static_cast<std::size_t>(b.n));
  for (auto& l : lengths) {
    l = in.ConsumeIntegralInRange<int>(0, 40);
  }
  const auto max_length = in.ConsumeIntegralInRange<index_t>(-2, 30);
  const auto cache = in.ConsumeIntegralInRange<index_t>(-2, 30);
  std::vector<double> penalties(static_cast<std::size_t>(b.n));
  const bool dapo_ok = succeeds_or_invalid(
      [&] { rlcore::dapo_overlong_penalty(lengths, max_length, cache, penalties); });
  check(dapo_ok == (max_length > 0 && cache >= 0 && cache <= max_length),
        "dapo_overlong_penalty: bad lengths <=> error");
  if (dapo_ok) {
    for (std::size_t i = 0; i < penalties.size(); ++i) {
      check(penalties[i] >= -1 && penalties[i] <= 0, "dapo penalty in [-1, 0]", penalties[i]);
      if (lengths[i] <= static_cast<double>(max_length - cache)) {
        check(penalties[i] == 0, "dapo: no penalty within the budget");
      }
      if (lengths[i] > static_cast<double>(max_length)) {
        check(penalties[i] == -1, "dapo: -1 beyond max_length");
      }
    }
  }
  auto mask_out = make_buffer(b, false);
  const bool trunc_ok = succeeds_or_invalid([&] {
    (void)rlcore::truncated_response_mask(layout, lengths, max_length,
                                          token_tensor(b, layout, mask_out));
  });
  if (trunc_ok) {
    for (index_t i = 0; i < b.n; ++i) {
      for (index_t t = 0; t < b.length(i); ++t) {
        const bool keep =
            b.valid(i, t) && lengths[static_cast<std::size_t>(i)] < static_cast<double>(max_length);
        check(mask_out.data[b.slot(i, t)] == (keep ? 1.0 : 0.0), "truncated_response_mask");
      }
    }
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const batch b = rlcore_fuzz::random_batch(in);
  const int which = in.ConsumeIntegralInRange<int>(0, 6);
  const fault f = pick_fault(in);
  auto scores = rlcore_fuzz::finite_values(in, static_cast<std::size_t>(b.n), largest);
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
  case 0: // many ties: scores from a small set
    for (auto& s : scores) {
      s = in.PickValueInArray({0.0, 1.0, 1e30, largest, -1e300});
    }
    break;
  case 1: { // near-equal: a few ulps around one value of any magnitude
    const double base = rlcore_fuzz::finite_value(in, largest);
    for (auto& s : scores) {
      s = base;
      for (int k = in.ConsumeIntegralInRange<int>(-4, 4); k != 0; k += k > 0 ? -1 : 1) {
        s = std::nextafter(s, k > 0 ? largest : -largest);
      }
    }
    break;
  }
  default:
    break;
  }
  // Returns sum rewards along a row (their true value can exceed the double range): 1e30 there;
  // whitening and process supervision take any finite value.
  const auto rewards = rlcore_fuzz::finite_values(in, b.mask.size(), which == 5 ? largest : 1e30);
  rlcore_fuzz::with_layout(b, [&](const auto& layout, const auto& groups, auto) {
    switch (which) {
    case 0:
    case 1:
      fuzz_grpo(in, b, layout, groups, scores, f);
      break;
    case 2:
      fuzz_rloo_opo(in, b, layout, groups, scores, f);
      break;
    case 3:
      fuzz_pass_at_k(in, b, layout, groups, scores, f);
      break;
    case 4:
      fuzz_returns(in, b, layout, groups, rewards, f);
      break;
    case 5:
      fuzz_whiten(in, b, layout, rewards, f);
      fuzz_process(in, b, layout, groups, rewards, f);
      break;
    default:
      fuzz_scores_and_rewards(in, b, layout, groups, rewards, f);
      break;
    }
  });
  return 0;
}
