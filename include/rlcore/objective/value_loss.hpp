// Clipped value loss of the PPO critic (math/value.hpp), aggregated, with its gradient.
//
//   per valid token  l = 0.5 * max((v - R)^2, (clamp(v, v_old - c, v_old + c) - R)^2)
//   loss             aggregate(l)  (objective/aggregate.hpp)
//   gradient         d loss / d v = w[i, t] * (v - R) where the unclipped branch wins (ties
//                    included), 0 where the clipped branch wins (v is then outside the clip range)
#pragma once

#include "../backend/host/execution.hpp"
#include "../error.hpp"
#include "../execution.hpp"
#include "../math/value.hpp"
#include "../tensor/layout.hpp"
#include "aggregate.hpp"

#include <cmath>
#include <type_traits>

namespace rlcore {

/// Options of value_loss.
struct value_loss_options {
  double clip = 0.5; ///< clip range c >= 0; +infinity turns clipping off
  aggregation_options aggregation{};
};

/// Result of value_loss.
struct value_loss_result {
  double loss = 0;
  double clip_fraction = 0; ///< valid tokens where the clipped branch wins
  double value_mean = 0;    ///< mean predicted value
  double valid_tokens = 0;
};

namespace detail {

struct value_token_sums {
  double loss = 0;
  double clipped = 0;
  double value = 0;
  double valid = 0;
  RLCORE_HD constexpr value_token_sums& operator+=(const value_token_sums& o) {
    loss += o.loss;
    clipped += o.clipped;
    value += o.value;
    valid += o.valid;
    return *this;
  }
};

template <class T, class Layout, class V, class Old, class R, class Grad>
struct value_loss_token_pass {
  Layout layout;
  V values;
  Old old_values;
  R returns;
  Grad grad;
  T clip;
  aggregation_weights weights;
  const double* row_counts;

  RLCORE_HD value_token_sums operator()(index_t i, index_t t) const {
    if (!layout.valid(i, t)) {
      grad(i, t) = T(0);
      return {};
    }
    const T v = T(values(i, t));
    const math::value_loss_term<T> term =
        math::clipped_value_loss(v, T(old_values(i, t)), T(returns(i, t)), clip);
    const double w = weights.row_weight(row_counts != nullptr ? row_counts[i] : 0.0);
    grad(i, t) = T(w) * term.gradient;
    return {w * double(term.value), term.clipped ? 1.0 : 0.0, double(v), 1.0};
  }
};

} // namespace detail

/// Clipped PPO value loss with its gradient.
///   layout           padded or packed batch layout
///   values           per-token predictions v (float or double)
///   old_values       per-token predictions of the rollout critic v_old
///   returns          per-token targets R
///   grad_values_out  per-token output d loss / d v (0 at masked slots)
///   options          clip range c (0.5; >= 0, +inf = off), aggregation (token_mean)
/// Returns value_loss_result{loss, clip_fraction, value_mean, valid_tokens}.
template <batch_layout Layout, class V, class Old, class R, class Grad,
          memory_space Space = typename Layout::space>
requires token_tensor_for<const V, Layout> && token_tensor_for<
    const Old,
    Layout> && token_tensor_for<const R,
                                Layout> && mutable_token_tensor_for<std::remove_reference_t<Grad>,
                                                                    Layout>
    value_loss_result value_loss(const Layout& layout, const V& values, const Old& old_values,
                                 const R& returns, Grad&& grad_values_out,
                                 const value_loss_options& options = {},
                                 const execution_context<Space>& ctx = {}) {
  constexpr const char* function = "value_loss";
  auto v = layout.bind(function, "values", values);
  auto old = layout.bind(function, "old_values", old_values);
  auto ret = layout.bind(function, "returns", returns);
  auto grad = layout.bind(function, "grad_values_out", grad_values_out);
  detail::require(options.clip >= 0, function, "options.clip",
                  "expected clip range >= 0 (+inf = off), got ", options.clip);
  using T = std::remove_cv_t<std::remove_reference_t<decltype(v(0, 0))>>;
  static_assert(real_scalar<T>, "rlcore::value_loss: values must be float or double");
  const aggregation_weights weights =
      detail::prepare_aggregation(function, options.aggregation, layout, ctx);
  auto counts = ctx.template allocate<double>(weights.divide_by_row_count ? layout.rows() : 0);
  if (weights.divide_by_row_count) {
    detail::row_valid_counts(layout, counts.data(), ctx);
  }
  const detail::value_token_sums sums =
      ctx.reduce_tokens(layout, detail::value_token_sums{},
                        detail::value_loss_token_pass<T, Layout, decltype(v), decltype(old),
                                                      decltype(ret), decltype(grad)>{
                            layout, v, old, ret, grad, T(options.clip), weights,
                            weights.divide_by_row_count ? counts.data() : nullptr});
  detail::check_global_tokens(function, options.aggregation, sums.valid);
  value_loss_result result;
  result.loss = sums.loss;
  result.valid_tokens = sums.valid;
  if (sums.valid > 0) {
    result.clip_fraction = sums.clipped / sums.valid;
    result.value_mean = sums.value / sums.valid;
  }
  return result;
}

} // namespace rlcore
