// Full KL between the policy and the reference softmax from their logits, forward and backward.
//
//   p = softmax(z / tau), q = softmax(z_ref / tau)          (tau = options.temperature, both)
//   KL(pi || ref) = sum_v p_v (log p_v - log q_v)
//   d (g KL) / dz_j = g p_j (log p_j - log q_j - KL) / tau   (w.r.t. the policy logits only)
//
// Shapes: logits and ref_logits M x V (any strides, float or double, the accumulator follows the
// policy logits); kl_out / grad_kl M reals; grad_logits_out M x V. Flat overloads: every row
// valid. Layout overloads: token slot (i, t) reads logits row i * T + t (padded) or offsets[i] + t
// (packed); masked slots get exactly 0 value and 0 gradient and their logits are not read.
#pragma once

#include "../error.hpp"
#include "../execution.hpp"
#include "../math/softmax.hpp"
#include "../tensor/concepts.hpp"
#include "../tensor/layout.hpp"
#include "logits_common.hpp"

#include <type_traits>

namespace rlcore {
namespace detail {

/// Statistics of the policy and reference rows of one token slot, and the status of both.
template <class Acc>
struct kl_row_stats {
  math::softmax_partial<Acc> p;
  math::softmax_partial<Acc> q;
};

template <class Acc, class Logits, class RefLogits>
RLCORE_HD kl_row_stats<Acc> kl_stats(const Logits& logits, const RefLogits& ref_logits,
                                     index_t slot, index_t i, index_t t, Acc inv_temperature,
                                     logits_status& status) {
  const auto p =
      math::row_softmax<Acc>(matrix_row<Logits>{logits, slot}, logits.cols, inv_temperature);
  const auto q = math::row_softmax<Acc>(matrix_row<RefLogits>{ref_logits, slot}, ref_logits.cols,
                                        inv_temperature);
  if (!p.finite) {
    status.nonfinite_logits = make_issue(slot, i, t, 0);
  }
  if (!q.finite) {
    status.nonfinite_ref_logits = make_issue(slot, i, t, 0);
  }
  return {p.stats, q.stats};
}

/// Per token slot: KL of the two rows; masked slots get 0.
template <class Layout, class Logits, class RefLogits, class Kl>
struct full_kl_op {
  using acc = math::logit_accumulator<typename Logits::value_type>;
  Layout layout;
  Logits logits;
  RefLogits ref_logits;
  Kl kl;
  acc inv_temperature;

  RLCORE_HD logits_status operator()(index_t i, index_t t) const {
    using K = std::remove_reference_t<decltype(kl(i, t))>;
    logits_status status;
    if (!layout.valid(i, t)) {
      kl(i, t) = K(0);
      return status;
    }
    const index_t slot = logits_row_of(layout, i, t);
    const auto s = kl_stats<acc>(logits, ref_logits, slot, i, t, inv_temperature, status);
    kl(i, t) = static_cast<K>(math::row_full_kl(matrix_row<Logits>{logits, slot}, s.p,
                                                matrix_row<RefLogits>{ref_logits, slot}, s.q,
                                                logits.cols, inv_temperature));
    return status;
  }
};

/// Per token slot: writes (or adds) g * dKL / dz into the slot's row of grad_logits.
template <class Layout, class Logits, class RefLogits, class GradKl, class GradLogits>
struct full_kl_backward_op {
  using acc = math::logit_accumulator<typename Logits::value_type>;
  Layout layout;
  Logits logits;
  RefLogits ref_logits;
  GradKl grad_kl;
  GradLogits grad_logits;
  acc inv_temperature;
  bool accumulate;

  RLCORE_HD logits_status operator()(index_t i, index_t t) const {
    logits_status status;
    const index_t slot = logits_row_of(layout, i, t);
    if (!layout.valid(i, t)) {
      if (!accumulate) {
        using G = typename GradLogits::value_type;
        for (index_t j = 0; j < grad_logits.cols; ++j) {
          grad_logits(slot, j) = G(0);
        }
      }
      return status;
    }
    const auto s = kl_stats<acc>(logits, ref_logits, slot, i, t, inv_temperature, status);
    const matrix_row<Logits> row{logits, slot};
    const matrix_row<RefLogits> ref_row{ref_logits, slot};
    const acc kl = math::row_full_kl(row, s.p, ref_row, s.q, logits.cols, inv_temperature);
    math::row_full_kl_grad(row, s.p, ref_row, s.q, logits.cols, inv_temperature, kl,
                           static_cast<acc>(grad_kl(i, t)), accumulate,
                           matrix_row<GradLogits>{grad_logits, slot});
    return status;
  }
};

template <class Logits, class RefLogits>
void check_ref_logits(const char* function, const Logits& z, const RefLogits& ref) {
  require(ref.rows == z.rows && ref.cols == z.cols, function, "ref_logits", "expected shape (",
          z.rows, ", ", z.cols, ") like logits, got (", ref.rows, ", ", ref.cols, ")");
}

template <class Layout, class Logits, class RefLogits, class Kl, class Space>
void run_full_kl(const char* function, const Layout& layout, const Logits& z, const RefLogits& ref,
                 const Kl& kl, const logits_options& options, const execution_context<Space>& ctx,
                 bool flat) {
  using acc = math::logit_accumulator<typename Logits::value_type>;
  const acc inv_temperature = inverse_temperature<acc>(function, options);
  const full_kl_op<Layout, Logits, RefLogits, Kl> op{layout, z, ref, kl, inv_temperature};
  const logits_status status = ctx.reduce_tokens(layout, logits_status{}, op);
  throw_on_issues(function, status, z.cols, flat, options);
}

template <class Layout, class Logits, class RefLogits, class GradKl, class GradLogits, class Space>
void run_full_kl_backward(const char* function, const Layout& layout, const Logits& z,
                          const RefLogits& ref, const GradKl& grad_kl, GradLogits& grad_logits_out,
                          const logits_options& options, const execution_context<Space>& ctx,
                          bool flat) {
  using acc = math::logit_accumulator<typename Logits::value_type>;
  const acc inv_temperature = inverse_temperature<acc>(function, options);
  const auto g_z = as_matrix_view(grad_logits_out);
  require(g_z.rows == z.rows && g_z.cols == z.cols, function, "grad_logits_out", "expected shape (",
          z.rows, ", ", z.cols, ") like logits, got (", g_z.rows, ", ", g_z.cols, ")");
  const full_kl_backward_op<Layout, Logits, RefLogits, GradKl, decltype(g_z)> op{
      layout, z, ref, grad_kl, g_z, inv_temperature, options.accumulate_gradient};
  const logits_status status = ctx.reduce_tokens(layout, logits_status{}, op);
  throw_on_issues(function, status, z.cols, flat, options);
}

} // namespace detail

/// Full KL per row: kl_out[r] = sum_v p_v (log p_v - log q_v), p = softmax(logits[r] / tau),
/// q = softmax(ref_logits[r] / tau). logits, ref_logits: M x V (V >= 1); kl_out: M reals. Terms
/// with p_v == 0 are 0; the result is clamped to [0, finite max]. Throws for shape mismatches,
/// tau <= 0 and (options.nonfinite_logits == error) NaN / inf in either matrix.
template <matrix_like Logits, matrix_like RefLogits, class Kl>
requires mutable_vector_like<Kl>
void full_kl_from_logits(const Logits& logits, const RefLogits& ref_logits, Kl&& kl_out,
                         const logits_options& options = {},
                         const execution_context<memory_space_of<Logits>>& ctx = {}) {
  constexpr const char* function = "full_kl_from_logits";
  const auto z = detail::const_matrix_view(logits);
  const auto ref = detail::const_matrix_view(ref_logits);
  detail::check_logits_shape(function, "logits", z, z.rows, "one per token");
  detail::check_ref_logits(function, z, ref);
  auto kl = as_vector_view(kl_out);
  detail::check_flat_size(function, "kl_out", kl, z.rows);
  const auto layout = padded_unmasked<memory_space_of<Logits>>(1, z.rows);
  detail::run_full_kl(function, layout, z, ref, detail::as_single_row(kl), options, ctx, true);
}

/// Layout form: token slot (i, t) reads row i * T + t (padded) or offsets[i] + t (packed) of both
/// logits matrices; kl_out is a per-token tensor of the layout; masked slots get exactly 0.
template <batch_layout Layout, matrix_like Logits, matrix_like RefLogits, class Kl>
requires mutable_token_tensor_for<Kl, Layout>
void full_kl_from_logits(const Layout& layout, const Logits& logits, const RefLogits& ref_logits,
                         Kl&& kl_out, const logits_options& options = {},
                         const execution_context<typename Layout::space>& ctx = {}) {
  constexpr const char* function = "full_kl_from_logits";
  const auto z = detail::const_matrix_view(logits);
  const auto ref = detail::const_matrix_view(ref_logits);
  detail::check_logits_shape(function, "logits", z, layout.token_slots(),
                             "one per token slot of the layout");
  detail::check_ref_logits(function, z, ref);
  const auto kl = layout.bind(function, "kl_out", kl_out);
  detail::run_full_kl(function, layout, z, ref, kl, options, ctx, false);
}

/// Gradient of sum_r g[r] KL_r w.r.t. the policy logits (the reference is a constant):
///   grad_logits_out[r, j] = g[r] p_j (log p_j - log q_j - KL_r) / tau   (0 where p_j == 0).
/// grad_kl: M reals; grad_logits_out: M x V, overwritten or, with options.accumulate_gradient,
/// added to; it may be the logits buffer itself (in-place, overwrite mode only).
template <matrix_like Logits, matrix_like RefLogits, vector_like GradKl, class GradLogits>
requires mutable_matrix_like<GradLogits>
void full_kl_from_logits_backward(const Logits& logits, const RefLogits& ref_logits,
                                  const GradKl& grad_kl, GradLogits&& grad_logits_out,
                                  const logits_options& options = {},
                                  const execution_context<memory_space_of<Logits>>& ctx = {}) {
  constexpr const char* function = "full_kl_from_logits_backward";
  const auto z = detail::const_matrix_view(logits);
  const auto ref = detail::const_matrix_view(ref_logits);
  detail::check_logits_shape(function, "logits", z, z.rows, "one per token");
  detail::check_ref_logits(function, z, ref);
  const auto g = detail::const_vector_view(grad_kl);
  detail::check_flat_size(function, "grad_kl", g, z.rows);
  const auto layout = padded_unmasked<memory_space_of<Logits>>(1, z.rows);
  detail::run_full_kl_backward(function, layout, z, ref, detail::as_single_row(g), grad_logits_out,
                               options, ctx, true);
}

/// Layout form of the backward: grad_kl is a per-token tensor of the layout; masked slots get a
/// zero row (or are left untouched when accumulating).
template <batch_layout Layout, matrix_like Logits, matrix_like RefLogits, class GradKl,
          class GradLogits>
requires token_tensor_for<const GradKl, Layout> && mutable_matrix_like<GradLogits>
void full_kl_from_logits_backward(const Layout& layout, const Logits& logits,
                                  const RefLogits& ref_logits, const GradKl& grad_kl,
                                  GradLogits&& grad_logits_out, const logits_options& options = {},
                                  const execution_context<typename Layout::space>& ctx = {}) {
  constexpr const char* function = "full_kl_from_logits_backward";
  const auto z = detail::const_matrix_view(logits);
  const auto ref = detail::const_matrix_view(ref_logits);
  detail::check_logits_shape(function, "logits", z, layout.token_slots(),
                             "one per token slot of the layout");
  detail::check_ref_logits(function, z, ref);
  const auto g = layout.bind(function, "grad_kl", grad_kl);
  detail::run_full_kl_backward(function, layout, z, ref, g, grad_logits_out, options, ctx, false);
}

} // namespace rlcore
