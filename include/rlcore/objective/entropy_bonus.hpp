// Entropy bonus as a standalone loss: loss = -coef * aggregate(H), with d loss / d H per token
// (for the logits backward to chain through dH/dz = -p (log p + H)). policy_objective folds the
// same term into its fused pass (policy_options::entropy_coef); this is for trainers that compute
// the bonus separately.
#pragma once

#include "../backend/host/execution.hpp"
#include "../error.hpp"
#include "../execution.hpp"
#include "../math/kl.hpp"
#include "../tensor/layout.hpp"
#include "aggregate.hpp"

#include <cmath>
#include <type_traits>

namespace rlcore {

/// Options of entropy_bonus_loss.
struct entropy_bonus_options {
  double coef = 0.01; ///< finite; loss = -coef * aggregate(H)
  aggregation_options aggregation{};
};

/// Result of entropy_bonus_loss.
struct entropy_bonus_result {
  double loss = 0;
  double entropy_mean = 0; ///< mean entropy over valid tokens (0 when none)
  double valid_tokens = 0;
};

namespace detail {

struct entropy_token_sums {
  double loss = 0;
  double entropy = 0;
  double valid = 0;
  RLCORE_HD constexpr entropy_token_sums& operator+=(const entropy_token_sums& o) {
    loss += o.loss;
    entropy += o.entropy;
    valid += o.valid;
    return *this;
  }
};

template <class T, class Layout, class H, class Grad>
struct entropy_bonus_token_pass {
  Layout layout;
  H entropy;
  Grad grad;
  double coef;
  aggregation_weights weights;
  const double* row_counts;

  RLCORE_DETAIL_FORCE_INLINE RLCORE_HD entropy_token_sums operator()(index_t i, index_t t) const {
    if (!layout.valid(i, t)) {
      grad(i, t) = T(0);
      return {};
    }
    const double h = double(entropy(i, t));
    const double w = weights.row_weight(row_counts != nullptr ? row_counts[i] : 0.0);
    grad(i, t) = T(-coef * w);
    return {-coef * w * h, h, 1.0};
  }
};

} // namespace detail

/// Entropy bonus loss = -coef * aggregate over valid tokens of H[i, t].
///   layout            padded or packed batch layout
///   entropy           per-token entropies H (float or double), e.g. from objective/logits.hpp
///   grad_entropy_out  per-token output d loss / d H = -coef * w[i, t] (0 at masked slots)
///   options           coef (0.01, finite), aggregation (token_mean)
template <batch_layout Layout, class H, class Grad, memory_space Space = typename Layout::space>
requires token_tensor_for<const H,
                          Layout> && mutable_token_tensor_for<std::remove_reference_t<Grad>, Layout>
    entropy_bonus_result entropy_bonus_loss(const Layout& layout, const H& entropy,
                                            Grad&& grad_entropy_out,
                                            const entropy_bonus_options& options = {},
                                            const execution_context<Space>& ctx = {}) {
  constexpr const char* function = "entropy_bonus_loss";
  auto h = layout.bind(function, "entropy", entropy);
  auto grad = layout.bind(function, "grad_entropy_out", grad_entropy_out);
  detail::require(std::isfinite(options.coef), function, "options.coef",
                  "expected a finite coefficient, got ", options.coef);
  using T = std::remove_cv_t<std::remove_reference_t<decltype(grad(0, 0))>>;
  static_assert(real_scalar<T>, "rlcore::entropy_bonus_loss: gradients must be float or double");
  const aggregation_weights weights =
      detail::prepare_aggregation(function, options.aggregation, layout, ctx);
  auto counts = ctx.template allocate<double>(weights.divide_by_row_count ? layout.rows() : 0);
  if (weights.divide_by_row_count) {
    detail::row_valid_counts(layout, counts.data(), ctx);
  }
  const detail::entropy_token_sums sums =
      ctx.reduce_tokens(layout, detail::entropy_token_sums{},
                        detail::entropy_bonus_token_pass<T, Layout, decltype(h), decltype(grad)>{
                            layout, h, grad, options.coef, weights,
                            weights.divide_by_row_count ? counts.data() : nullptr});
  detail::check_global_tokens(function, options.aggregation, sums.valid);
  return {sums.loss, sums.valid > 0 ? sums.entropy / sums.valid : 0.0, sums.valid};
}

} // namespace rlcore
