// Whitening over the valid tokens of a batch: (x - mean) / sqrt(var + eps).
#pragma once

#include "../math/advantage.hpp"
#include "../math/stats.hpp"
#include "common.hpp"

#include <type_traits>

namespace rlcore {

/// What whitening does.
enum class whiten_kind {
  unbiased,   ///< (x - mean) / sqrt(var + eps), var divides by n - 1 (default; verl masked_whiten)
  population, ///< the same with var dividing by n (OpenRLHF, which clamps var at eps instead)
  mean_only,  ///< x - mean (no scaling)
  none        ///< x unchanged (estimator options only: skip whitening)
};

/// Options of whiten.
struct whiten_options {
  whiten_kind kind = whiten_kind::unbiased;
  double eps = 1e-8; ///< added to the variance (> 0)
};

namespace detail {

template <class Layout, class X>
struct whiten_first_pass {
  Layout layout;
  X x;
  RLCORE_HD math::moment_sums operator()(index_t i, index_t t) const {
    return layout.valid(i, t) ? math::first_pass_term(static_cast<double>(x(i, t)))
                              : math::moment_sums{};
  }
};

template <class Layout, class X>
struct whiten_second_pass {
  Layout layout;
  X x;
  double first_mean;
  int level; ///< pass 1's unit level
  RLCORE_HD math::moment_sums operator()(index_t i, index_t t) const {
    return layout.valid(i, t)
               ? math::second_pass_term(static_cast<double>(x(i, t)), first_mean, level)
               : math::moment_sums{0.0, 0.0, 0.0, level}; // masked: nothing, in pass 1's unit
  }
};

/// out(i, t) = whitened(in(i, t)) at valid tokens, out(i, t) = 0 at masked ones. Formed in units
/// u >= 1 (math/stats.hpp): (x / u - mean / u) / sqrt(var / u^2 + eps / u^2), times u for
/// mean_only, saturated to the output type.
template <class Layout, class In, class Out>
struct whiten_write {
  Layout layout;
  In in;
  Out out;
  math::moments_in_units moments; ///< mean (hi + lo) in units
  double var;                     ///< in units^2
  double eps;                     ///< in units^2
  bool mean_only;
  using T = typename Out::value_type;
  RLCORE_HD T value(index_t i, index_t t) const {
    const double w =
        math::whitened(moments.centred(static_cast<double>(in(i, t))), 0.0, var, eps, mean_only);
    // standardised values are bounded; only x - mean can leave the output range
    return mean_only ? math::finite_cast<T>(math::from_units(w, moments.unit)) : static_cast<T>(w);
  }
  RLCORE_HD void operator()(index_t i, index_t t) const {
    out(i, t) = layout.valid(i, t) ? value(i, t) : T(0); // masked slots are never read
  }
};

/// Checks whiten options; `kind_argument` / `eps_argument` name them in the caller's signature.
inline void validate_whiten(const char* function, const char* kind_argument,
                            const char* eps_argument, whiten_kind kind, double eps) {
  require(kind == whiten_kind::unbiased || kind == whiten_kind::population
              || kind == whiten_kind::mean_only || kind == whiten_kind::none,
          function, kind_argument, "expected unbiased, population, mean_only or none, got ",
          static_cast<int>(kind));
  require_positive_eps(function, eps_argument, eps);
}

/// Whitens bound token tensor `in` into `out` (they may be the same tensor) over the layout's
/// valid tokens; masked tokens of `out` get 0. kind == none copies (masked -> 0). Throws naming
/// `kind_argument` when the unbiased form sees exactly one valid token.
template <class Layout, class In, class Out, class Context>
void whiten_tokens(const char* function, const char* kind_argument, const Layout& layout,
                   const In& in, const Out& out, whiten_kind kind, double eps, const Context& ctx) {
  if (kind == whiten_kind::none) {
    ctx.for_each_token(layout, whiten_write<Layout, In, Out>{layout, in, out, {}, 0.0, 1.0, true});
    return;
  }
  // Units of at least 1, so that eps / u^2 cannot overflow (math/stats.hpp).
  const math::moment_sums pass1 = math::with_level_at_least(
      ctx.reduce_tokens(layout, math::moment_sums{}, whiten_first_pass<Layout, In>{layout, in}),
      math::normal_unit_level);
  require(!(kind == whiten_kind::unbiased && pass1.count == 1), function, kind_argument,
          "unbiased whitening needs at least 2 valid tokens, got 1");
  const double m1 = math::first_mean(pass1);
  const math::moment_sums pass2 = ctx.reduce_tokens(
      layout, math::moment_sums{}, whiten_second_pass<Layout, In>{layout, in, m1, pass1.level});
  math::moments_in_units moments = math::units_of_level(pass1.level);
  moments.mean = math::corrected_split_mean(m1, pass2);
  const double var = math::variance(pass2, kind == whiten_kind::population ? std_kind::population
                                                                           : std_kind::unbiased);
  const double eps_in_units = moments.variance_eps_in_units(eps);
  ctx.for_each_token(layout,
                     whiten_write<Layout, In, Out>{layout, in, out, moments, var, eps_in_units,
                                                   kind == whiten_kind::mean_only});
}

} // namespace detail

/// Whitens x in place over the valid tokens of the batch:
///   x <- (x - mean) / sqrt(var + eps)   (kind unbiased, default: var divides by n - 1;
///                                        population: by n), or x <- x - mean (mean_only),
/// mean and var over the n valid tokens, in double, two passes. Masked tokens are set to 0.
/// kind none leaves valid tokens unchanged. Errors: eps <= 0; exactly one valid token with the
/// unbiased form. No valid token: nothing to whiten (masked tokens still set to 0).
/// Shapes: x per-token for the layout. verl masked_whiten = defaults; OpenRLHF = population
/// (it uses rsqrt(max(var, 1e-8)) instead of rsqrt(var + 1e-8)).
template <batch_layout Layout, class X>
requires mutable_token_tensor_for<std::remove_reference_t<X>, Layout>
void whiten(const Layout& layout, X&& x_inout, const whiten_options& options = {},
            const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "whiten";
  detail::validate_whiten(function, "options.kind", "options.eps", options.kind, options.eps);
  const auto x = layout.bind(function, "x_inout", x_inout);
  detail::whiten_tokens(function, "x_inout", layout, x, x, options.kind, options.eps, ctx);
}

} // namespace rlcore
