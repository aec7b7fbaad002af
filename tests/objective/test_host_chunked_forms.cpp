// The host chunked token pass for every loss form and importance level: GSPO (sequence and token
// level), GMPO, and every form with the rollout importance correction (token and sequence level,
// truncate and mask) run W slots of a row at a time with the per-row terms of the pre-pass. Their
// gradients must be the token-by-token path's bits (operator(), what every backend without the
// chunked form runs), their sums within rounding of it (another order), and the chunked result
// the same bits whether rows are read in place or gathered, for every thread count and (GCC)
// every instruction set.
#include <rlcore/objective/policy.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using rlcore::importance_level;
using rlcore::importance_mode;
using rlcore::index_t;
using rlcore::policy_loss;

// Packed rows of lengths 0 .. 1200 (empty rows, rows shorter than a 32-slot chunk, rows longer
// than a 1024-slot piece), ~12% of the slots masked, masked slots holding NaN / inf in every
// input; one fully masked row. Log-ratios lp - old in +-0.5 (GMPO's 0.4 clip and a 0.45 clamp
// active on some tokens), old - rollout in +-0.9 (weights 0.4 .. 2.5: truncation at 2 and the
// mask [0.5, 2] active on some tokens).
struct ragged_batch {
  std::vector<std::int64_t> offsets{0};
  std::vector<unsigned char> mask;
  std::vector<double> lp, old, adv, ref, entropy, rollout;
};

ragged_batch make_batch(index_t rows, unsigned seed) {
  ragged_batch b;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (index_t i = 0; i < rows; ++i) {
    const index_t length = i == 3 ? 77 : (i * 389) % 1201;
    const double row_shift = 0.2 * (u(rng) - 0.5); // GSPO's mean log-ratio away from 0
    for (index_t t = 0; t < length; ++t) {
      const bool valid = i != 3 && u(rng) < 0.88;
      b.mask.push_back(valid ? 1 : 0);
      const double lp = -4 * u(rng);
      const double old = lp - row_shift + (u(rng) - 0.5);
      b.lp.push_back(valid ? lp : nan);
      b.old.push_back(valid ? old : inf);
      b.adv.push_back(valid ? (u(rng) < 0.05 ? 0.0 : 4 * u(rng) - 2) : -inf);
      b.ref.push_back(valid ? lp + 1.6 * (u(rng) - 0.5) : nan);
      b.entropy.push_back(valid ? 3 * u(rng) : nan);
      b.rollout.push_back(valid ? old + 1.8 * (u(rng) - 0.5) : -inf);
    }
    b.offsets.push_back(static_cast<std::int64_t>(b.lp.size()));
  }
  return b;
}

template <class T>
std::vector<T> as(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

// A token functor with the host chunked and row forms hidden: reduce_tokens runs it token by
// token through operator(), as every backend without the chunked form does.
template <class F>
struct token_by_token {
  F f;
  rlcore::detail::policy_token_sums operator()(index_t i, index_t t) const { return f(i, t); }
};

// The row pre-pass with its host whole-row form hidden: reduce_rows sums it token by token.
template <class F>
struct rows_token_by_token {
  F f;
  rlcore::detail::policy_row_stats operator()(index_t i, index_t t) const { return f(i, t); }
};

struct form {
  const char* name;
  policy_loss loss;
  rlcore::gspo_level gspo;
  int variant;
};

const form forms[] = {
    {"clipped", policy_loss::clipped, rlcore::gspo_level::sequence, 0},
    {"CISPO", policy_loss::cispo, rlcore::gspo_level::sequence, 0},
    {"REINFORCE", policy_loss::reinforce, rlcore::gspo_level::sequence, 0},
    {"SAPO", policy_loss::sapo, rlcore::gspo_level::sequence, 2},
    {"GSPO token level", policy_loss::gspo, rlcore::gspo_level::token, 0},
    {"GSPO sequence level", policy_loss::gspo, rlcore::gspo_level::sequence, 3},
    {"GMPO", policy_loss::gmpo, rlcore::gspo_level::sequence, 3},
};

struct correction {
  const char* name;
  importance_level level;
  importance_mode mode;
};

const correction corrections[] = {
    {"no IS", importance_level::none, importance_mode::truncate},
    {"token IS truncate", importance_level::token, importance_mode::truncate},
    {"token IS mask", importance_level::token, importance_mode::mask},
    {"sequence IS truncate", importance_level::sequence, importance_mode::truncate},
    {"sequence IS mask", importance_level::sequence, importance_mode::mask},
};

// The options of one case: KL estimator and output clamp, log-ratio clamp and entropy mask vary
// with the case number so that every form meets several of them.
rlcore::policy_options case_options(const form& f, const correction& c, int case_number) {
  rlcore::policy_options o;
  o.loss = f.loss;
  o.gspo = f.gspo;
  o.gspo_eps_low = 0.01;
  o.gspo_eps_high = 0.012;
  o.eps_high = 0.28;
  o.dual_clip = case_number % 2 == 0 ? 3.0 : 0.0;
  o.kl_beta = 0.05;
  const rlcore::kl_estimator estimators[] = {rlcore::kl_estimator::k3, rlcore::kl_estimator::k2,
                                             rlcore::kl_estimator::k3_importance,
                                             rlcore::kl_estimator::k1};
  o.kl = estimators[case_number % 4];
  o.kl_output_clamp = case_number % 3 == 1;
  o.kl_output_min = -0.01;
  o.kl_output_max = 0.02;
  o.log_ratio_clamp = case_number % 3 == 2 ? 0.45 : 20.0;
  o.entropy_coef = 0.01;
  o.entropy_top_fraction = case_number % 2 == 1 ? 0.8 : 1.0;
  o.importance.level = c.level;
  o.importance.mode = c.mode;
  o.importance.cap = 2.0;
  o.importance.low = 0.5;
  o.importance.high = 2.0;
  o.aggregation.mode = rlcore::aggregation::seq_mean_token_mean;
  return o;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

bool same_bits(const rlcore::objective_result& a, const rlcore::objective_result& b) {
  return std::memcmp(&a, &b, sizeof(rlcore::objective_result)) == 0;
}

} // namespace

TEST_CASE_TEMPLATE("host chunked path: every form x importance level gives the token-by-token "
                   "path's gradients, bitwise, and its sums",
                   T, float, double) {
  const ragged_batch b = make_batch(64, 21);
  const std::vector<T> lp = as<T>(b.lp), old = as<T>(b.old), adv = as<T>(b.adv), ref = as<T>(b.ref),
                       entropy = as<T>(b.entropy), rollout = as<T>(b.rollout);
  const auto layout = rlcore::packed(b.offsets, b.mask);
  const index_t rows = layout.rows();
  const rlcore::host_context ctx;
  const rlcore::detail::policy_views views{
      layout.bind("test", "lp", lp),     layout.bind("test", "old", old),
      layout.bind("test", "adv", adv),   layout.bind("test", "ref", ref),
      layout.bind("test", "h", entropy), layout.bind("test", "rollout", rollout)};
  std::vector<T> grad_chunked(lp.size()), grad_tokens(lp.size());
  std::vector<T> grad_h_chunked(lp.size()), grad_h_tokens(lp.size());
  using grad_view = decltype(layout.bind("", "", grad_chunked));
  using pass =
      rlcore::detail::policy_token_pass<T, decltype(layout), decltype(views), grad_view, grad_view>;
  int case_number = 0;
  for (const form& f : forms) {
    for (const correction& c : corrections) {
      ++case_number;
      INFO(std::string(f.name), ", ", std::string(c.name), ", case ", case_number);
      const rlcore::policy_options o = case_options(f, c, case_number);
      rlcore::detail::policy_params<T> p = rlcore::detail::make_policy_params<T>(o);
      p.entropy_threshold = T(0.6); // the 0.2-quantile of U(0, 3) entropies
      p.weights = rlcore::aggregation_weights{1.0 / double(rows), true};
      p.row_stats_needed = true;
      p.row_counts_only = false;
      // the full pre-pass (row counts, mean log-ratios, advantages, kept weights, rollout sums)
      using row_pass = rlcore::detail::policy_row_pass<T, decltype(layout), decltype(views)>;
      std::vector<rlcore::detail::policy_row_stats> row_stats(static_cast<std::size_t>(rows));
      ctx.reduce_rows(layout, row_stats.data(), row_pass{layout, views, p});
      // the host's whole-row form of the pre-pass: operator()'s sums, bitwise
      std::vector<rlcore::detail::policy_row_stats> row_stats_tokens(row_stats.size());
      ctx.reduce_rows(layout, row_stats_tokens.data(),
                      rows_token_by_token<row_pass>{row_pass{layout, views, p}});
      CHECK(std::memcmp(row_stats.data(), row_stats_tokens.data(),
                        row_stats.size() * sizeof(rlcore::detail::policy_row_stats))
            == 0);
      std::fill(grad_chunked.begin(), grad_chunked.end(), T(-7));
      std::fill(grad_tokens.begin(), grad_tokens.end(), T(-7));
      std::fill(grad_h_chunked.begin(), grad_h_chunked.end(), T(-7));
      std::fill(grad_h_tokens.begin(), grad_h_tokens.end(), T(-7));
      const pass chunked{layout,
                         views,
                         layout.bind("test", "grad", grad_chunked),
                         layout.bind("test", "grad_h", grad_h_chunked),
                         p,
                         row_stats.data()};
      const pass tokens{layout,
                        views,
                        layout.bind("test", "grad", grad_tokens),
                        layout.bind("test", "grad_h", grad_h_tokens),
                        p,
                        row_stats.data()};
      REQUIRE(chunked.host_chunk_enabled());
      CHECK(chunked.host_variant() == f.variant);
      const auto s_chunked =
          ctx.reduce_tokens(layout, rlcore::detail::policy_token_sums{}, chunked);
      const auto s_tokens = ctx.reduce_tokens(layout, rlcore::detail::policy_token_sums{},
                                              token_by_token<pass>{tokens});
      // the same operations per token: the same bits (signed zeros included)
      CHECK(same_bits(grad_chunked, grad_tokens));
      CHECK(same_bits(grad_h_chunked, grad_h_tokens));
      bool finite = true;
      for (std::size_t k = 0; k < lp.size(); ++k) {
        finite = finite && std::isfinite(grad_chunked[k]);
        if (b.mask[k] == 0) {
          REQUIRE(grad_chunked[k] == T(0)); // masked NaN / inf slots: exactly 0
        }
      }
      CHECK(finite);
      // counts exactly; sums in another order (T-precision pieces), within rounding
      CHECK(s_chunked.valid == s_tokens.valid);
      CHECK(s_chunked.clipped_low == s_tokens.clipped_low);
      CHECK(s_chunked.clipped_high == s_tokens.clipped_high);
      CHECK(s_chunked.dual_clipped == s_tokens.dual_clipped);
      CHECK(s_chunked.importance_corrected == s_tokens.importance_corrected);
      CHECK(s_chunked.entropy_kept == s_tokens.entropy_kept);
      const double tolerance = std::is_same_v<T, float> ? 4e-6 : 1e-11;
      const auto near = [&](double a, double e, double scale) {
        return std::fabs(a - e) <= tolerance * std::max(std::fabs(e), scale);
      };
      CHECK(near(s_chunked.policy_loss, s_tokens.policy_loss, 1.0));
      CHECK(near(s_chunked.kl_loss, s_tokens.kl_loss, 0.01));
      CHECK(near(s_chunked.kl_value, s_tokens.kl_value, 100.0));
      CHECK(near(s_chunked.entropy, s_tokens.entropy, 1.0));
      CHECK(near(s_chunked.entropy_loss, s_tokens.entropy_loss, 0.01));
      CHECK(near(s_chunked.neg_delta, s_tokens.neg_delta, 100.0));
      CHECK(near(s_chunked.advantage, s_tokens.advantage, 100.0));
      CHECK(near(s_chunked.advantage_sq, s_tokens.advantage_sq, 1.0));
      CHECK(near(s_chunked.importance_weight, s_tokens.importance_weight, 1.0));
      CHECK(s_tokens.valid > 30000);
      // the options are exercised: clips (or truncations) and corrections happen
      if (f.loss != policy_loss::reinforce && f.loss != policy_loss::sapo) {
        CHECK(s_tokens.clipped_high > 0);
      }
      if (c.level != importance_level::none && o.log_ratio_clamp > 1) {
        // (a 0.45 clamp keeps every weight within [0.64, 1.57]: no correction)
        CHECK(s_tokens.importance_corrected > 0);
        CHECK(s_tokens.importance_weight != s_tokens.valid);
      }
    }
  }
}

namespace {

// The batch as padded N x T rows (T = the longest row; padding masked, NaN), row-major (every
// view contiguous along its rows: read in place) or column-major (col_stride = N: every chunk
// gathered token by token).
template <class T>
struct padded_batch {
  index_t rows = 0, cols = 0;
  std::vector<unsigned char> mask;
  std::vector<T> lp, old, adv, ref, entropy, rollout;
};

template <class T>
padded_batch<T> to_padded(const ragged_batch& b, bool column_major) {
  padded_batch<T> p;
  p.rows = static_cast<index_t>(b.offsets.size()) - 1;
  for (index_t i = 0; i < p.rows; ++i) {
    p.cols = std::max<index_t>(p.cols, b.offsets[std::size_t(i) + 1] - b.offsets[std::size_t(i)]);
  }
  const auto slots = static_cast<std::size_t>(p.rows * p.cols);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  p.mask.assign(slots, 0);
  for (auto* x : {&p.lp, &p.old, &p.adv, &p.ref, &p.entropy, &p.rollout}) {
    x->assign(slots, nan);
  }
  for (index_t i = 0; i < p.rows; ++i) {
    const auto begin = static_cast<std::size_t>(b.offsets[std::size_t(i)]);
    const auto length = static_cast<index_t>(b.offsets[std::size_t(i) + 1]) - index_t(begin);
    for (index_t t = 0; t < length; ++t) {
      const std::size_t at =
          column_major ? std::size_t(t * p.rows + i) : std::size_t(i * p.cols + t);
      const std::size_t k = begin + std::size_t(t);
      p.mask[at] = b.mask[k];
      p.lp[at] = T(b.lp[k]);
      p.old[at] = T(b.old[k]);
      p.adv[at] = T(b.adv[k]);
      p.ref[at] = T(b.ref[k]);
      p.entropy[at] = T(b.entropy[k]);
      p.rollout[at] = T(b.rollout[k]);
    }
  }
  return p;
}

template <class T>
struct call_result {
  rlcore::objective_result result;
  std::vector<T> grad, grad_entropy;
};

// policy_objective over a layout and per-token tensors made by `view` from vectors.
template <class T, class Layout, class MakeView, class Batch>
call_result<T> call(const Layout& layout, MakeView&& view, Batch& b,
                    const rlcore::policy_options& o, const rlcore::host_context& ctx) {
  call_result<T> r;
  r.grad.assign(b.lp.size(), T(-7));
  r.grad_entropy.assign(b.lp.size(), T(-7));
  const auto lp = view(b.lp), old = view(b.old), adv = view(b.adv), ref = view(b.ref),
             entropy = view(b.entropy), rollout = view(b.rollout);
  const rlcore::policy_inputs<decltype(lp), decltype(old), decltype(adv), decltype(ref),
                              decltype(entropy), decltype(rollout)>
      inputs{lp, old, adv, ref, entropy, rollout};
  r.result = rlcore::policy_objective(layout, inputs, view(r.grad), view(r.grad_entropy), o, ctx);
  return r;
}

template <class T>
call_result<T> call_packed(const ragged_batch& b, const std::vector<T>& lp,
                           const std::vector<T>& old, const std::vector<T>& adv,
                           const std::vector<T>& ref, const std::vector<T>& entropy,
                           const std::vector<T>& rollout, const rlcore::policy_options& o,
                           const rlcore::host_context& ctx) {
  struct vectors {
    const std::vector<T>&lp, &old, &adv, &ref, &entropy, &rollout;
  } v{lp, old, adv, ref, entropy, rollout};
  const auto identity = [](auto& x) -> auto& {
    return x;
  };
  return call<T>(rlcore::packed(b.offsets, b.mask), identity, v, o, ctx);
}

} // namespace

TEST_CASE_TEMPLATE("host chunked forms: rows read in place and gathered, every thread count and "
                   "instruction set give the same bits; packed and padded the same gradients",
                   T, float, double) {
  const ragged_batch b = make_batch(48, 31);
  padded_batch<T> row_major = to_padded<T>(b, false);
  padded_batch<T> col_major = to_padded<T>(b, true);
  const index_t rows = row_major.rows;
  const index_t cols = row_major.cols;
  const auto row_view = [&](auto& x) { return rlcore::make_matrix_view(x.data(), rows, cols); };
  const auto col_view = [&](auto& x) {
    using E = std::remove_reference_t<decltype(*x.data())>;
    return rlcore::matrix_view<E>{x.data(), rows, cols, 1, rows};
  };
  const std::vector<T> lp = as<T>(b.lp), old = as<T>(b.old), adv = as<T>(b.adv), ref = as<T>(b.ref),
                       entropy = as<T>(b.entropy), rollout = as<T>(b.rollout);
  rlcore::host_context threaded;
  threaded.threads = 3;
  rlcore::host_context baseline;
  baseline.max_isa = rlcore::host_isa::baseline;
  int case_number = 0;
  for (const form& f : forms) {
    for (const correction& c : corrections) {
      ++case_number;
      INFO(std::string(f.name), ", ", std::string(c.name), ", case ", case_number);
      const rlcore::policy_options o = case_options(f, c, case_number);
      const auto in_place = call<T>(rlcore::padded(row_view(row_major.mask)), row_view, row_major,
                                    o, rlcore::host_context{});
      const auto gathered = call<T>(rlcore::padded(col_view(col_major.mask)), col_view, col_major,
                                    o, rlcore::host_context{});
      CHECK(same_bits(in_place.result, gathered.result));
      bool same_gradients = true;
      for (index_t i = 0; i < rows; ++i) {
        for (index_t t = 0; t < cols; ++t) {
          const auto at = std::size_t(i * cols + t);
          const auto at_c = std::size_t(t * rows + i);
          same_gradients =
              same_gradients
              && std::memcmp(&in_place.grad[at], &gathered.grad[at_c], sizeof(T)) == 0
              && std::memcmp(&in_place.grad_entropy[at], &gathered.grad_entropy[at_c], sizeof(T))
                     == 0;
        }
      }
      CHECK(same_gradients);
      // threads: blocks of rows summed in block order
      const auto packed = call_packed(b, lp, old, adv, ref, entropy, rollout, o, {});
      const auto packed_threaded = call_packed(b, lp, old, adv, ref, entropy, rollout, o, threaded);
      CHECK(same_bits(packed.result, packed_threaded.result));
      CHECK(same_bits(packed.grad, packed_threaded.grad));
#if defined(__GNUC__) && !defined(__clang__)
      // GCC compiles the kernels without FMA contraction: the baseline kernel's bits
      const auto packed_baseline = call_packed(b, lp, old, adv, ref, entropy, rollout, o, baseline);
      CHECK(same_bits(packed.result, packed_baseline.result));
      CHECK(same_bits(packed.grad, packed_baseline.grad));
#endif
      // packed and padded: the same per-token gradients (padding slots are masked), the sums in
      // blocks of other sizes
      bool same_packed_gradients = true;
      for (index_t i = 0; i < rows; ++i) {
        const auto begin = static_cast<std::size_t>(b.offsets[std::size_t(i)]);
        const auto length = static_cast<index_t>(b.offsets[std::size_t(i) + 1]) - index_t(begin);
        for (index_t t = 0; t < length; ++t) {
          same_packed_gradients =
              same_packed_gradients
              && std::memcmp(&packed.grad[begin + std::size_t(t)],
                             &in_place.grad[std::size_t(i * cols + t)], sizeof(T))
                     == 0;
        }
      }
      CHECK(same_packed_gradients);
      const double tolerance = std::is_same_v<T, float> ? 4e-6 : 1e-12;
      CHECK(packed.result.loss
            == doctest::Approx(in_place.result.loss).epsilon(tolerance).scale(1.0));
      CHECK(packed.result.metrics.valid_tokens == in_place.result.metrics.valid_tokens);
      CHECK(packed.result.metrics.clip_fraction == in_place.result.metrics.clip_fraction);
      CHECK(packed.result.metrics.importance_corrected_fraction
            == in_place.result.metrics.importance_corrected_fraction);
      CHECK(std::isfinite(packed.result.loss));
    }
  }
}

TEST_CASE_TEMPLATE("host chunked forms: micro-batches with global counts give the whole batch's "
                   "gradients, bitwise, and its loss",
                   T, float, double) {
  const ragged_batch b = make_batch(60, 41);
  const index_t rows = static_cast<index_t>(b.offsets.size()) - 1;
  double valid = 0;
  for (const unsigned char m : b.mask) {
    valid += m;
  }
  int case_number = 0;
  for (const form& f : forms) {
    for (const correction& c : corrections) {
      ++case_number;
      INFO(std::string(f.name), ", ", std::string(c.name), ", case ", case_number);
      rlcore::policy_options o = case_options(f, c, case_number);
      o.entropy_top_fraction = 1; // the entropy quantile is per call: not micro-batch invariant
      o.aggregation.mode = case_number % 2 == 0 ? rlcore::aggregation::seq_mean_token_mean
                                                : rlcore::aggregation::token_mean;
      o.aggregation.global_tokens = valid;
      o.aggregation.global_sequences = double(rows);
      const auto whole = call_packed(b, as<T>(b.lp), as<T>(b.old), as<T>(b.adv), as<T>(b.ref),
                                     as<T>(b.entropy), as<T>(b.rollout), o, {});
      for (const index_t parts : {2, 3}) {
        double loss = 0;
        std::vector<T> grad;
        for (index_t part = 0; part < parts; ++part) {
          const index_t begin = rows * part / parts;
          const index_t end = rows * (part + 1) / parts;
          ragged_batch s;
          const auto first = static_cast<std::size_t>(b.offsets[std::size_t(begin)]);
          const auto last = static_cast<std::size_t>(b.offsets[std::size_t(end)]);
          for (index_t i = begin; i < end; ++i) {
            s.offsets.push_back(b.offsets[std::size_t(i) + 1] - std::int64_t(first));
          }
          const auto cut = [&](const std::vector<double>& x) {
            return std::vector<T>(x.begin() + std::ptrdiff_t(first),
                                  x.begin() + std::ptrdiff_t(last));
          };
          s.mask.assign(b.mask.begin() + std::ptrdiff_t(first),
                        b.mask.begin() + std::ptrdiff_t(last));
          const auto r = call_packed(s, cut(b.lp), cut(b.old), cut(b.adv), cut(b.ref),
                                     cut(b.entropy), cut(b.rollout), o, {});
          loss += r.result.loss;
          grad.insert(grad.end(), r.grad.begin(), r.grad.end());
        }
        INFO("parts ", parts);
        CHECK(same_bits(grad, whole.grad));
        CHECK(loss
              == doctest::Approx(whole.result.loss)
                     .epsilon(std::is_same_v<T, float> ? 4e-6 : 1e-12)
                     .scale(1.0));
      }
    }
  }
}
