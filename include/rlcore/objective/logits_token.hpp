// Token log-probs and entropy from logits, forward and backward (part of issue #3).
//
//   x = z / tau                      (tau = options.temperature)
//   lp = x[id] - logsumexp(x)        log-prob of the sampled token id
//   H  = logsumexp(x) - sum_v softmax(x)_v x_v = -sum_v p_v log p_v
//   d lp / dz_j = (1[j == id] - p_j) / tau
//   dH / dz_j   = -p_j (log p_j + H) / tau
//
// Shapes: logits M x V (any strides, float or double; accumulated in float for float logits,
// double for double); token_ids M integers; log-probs / entropy M values (float or double).
// Flat overloads take per-token vectors of M entries, every row valid. Layout overloads take a
// padded (N x T, M = N * T) or packed (M = offsets[N]) layout, bind per-token tensors through it,
// and treat masked token slots as absent: value exactly 0, gradient exactly 0, their logits never
// read (inf or NaN there is harmless).
#pragma once

#include "../error.hpp"
#include "../execution.hpp"
#include "../math/softmax.hpp"
#include "../tensor/concepts.hpp"
#include "../tensor/layout.hpp"
#include "logits_common.hpp"

#include <type_traits>
#include <utility>

namespace rlcore {
namespace detail {

/// Per token slot: lp (and H) from one logits row; masked slots get 0.
template <class Layout, class Logits, class Ids, class LogProbs, class Entropy>
struct token_log_probs_op {
  using acc = math::logit_accumulator<typename Logits::value_type>;
  static constexpr bool with_entropy = !std::is_same_v<Entropy, no_token_tensor>;

  Layout layout;
  Logits logits;
  Ids token_ids;
  LogProbs log_probs;
  Entropy entropy;
  acc inv_temperature;

  RLCORE_HD void write(index_t i, index_t t, acc lp, acc h) const {
    using LP = std::remove_reference_t<decltype(log_probs(i, t))>;
    log_probs(i, t) = static_cast<LP>(lp);
    if constexpr (with_entropy) {
      using H = std::remove_reference_t<decltype(entropy(i, t))>;
      entropy(i, t) = static_cast<H>(h);
    }
  }

  RLCORE_HD logits_status operator()(index_t i, index_t t) const {
    logits_status status;
    if (!layout.valid(i, t)) {
      write(i, t, acc(0), acc(0));
      return status;
    }
    const index_t slot = logits_row_of(layout, i, t);
    const auto id = static_cast<long long>(token_ids(i, t));
    if (id < 0 || id >= static_cast<long long>(logits.cols)) {
      status.bad_token_id = make_issue(slot, i, t, id);
      write(i, t, acc(0), acc(0));
      return status;
    }
    const matrix_row<Logits> row{logits, slot};
    const auto r = math::row_softmax<acc>(row, logits.cols, inv_temperature);
    if (!r.finite) {
      status.nonfinite_logits = make_issue(slot, i, t, 0);
    }
    const acc lp = math::log_softmax_at(r.stats, static_cast<acc>(row(static_cast<index_t>(id))),
                                        inv_temperature);
    write(i, t, lp, with_entropy ? math::softmax_entropy(r.stats) : acc(0));
    return status;
  }
};

/// Per token slot: writes (or adds) d(g_lp lp + g_H H) / d logits into the slot's row.
template <class Layout, class Logits, class Ids, class GradLogProbs, class GradEntropy,
          class GradLogits>
struct token_log_probs_backward_op {
  using acc = math::logit_accumulator<typename Logits::value_type>;
  static constexpr bool with_entropy = !std::is_same_v<GradEntropy, no_token_tensor>;

  Layout layout;
  Logits logits;
  Ids token_ids;
  GradLogProbs grad_log_probs;
  GradEntropy grad_entropy;
  GradLogits grad_logits;
  acc inv_temperature;
  bool accumulate;

  RLCORE_HD void zero_row(index_t slot) const {
    if (!accumulate) {
      using G = typename GradLogits::value_type;
      for (index_t j = 0; j < grad_logits.cols; ++j) {
        grad_logits(slot, j) = G(0);
      }
    }
  }

  RLCORE_HD logits_status operator()(index_t i, index_t t) const {
    logits_status status;
    const index_t slot = logits_row_of(layout, i, t);
    if (!layout.valid(i, t)) {
      zero_row(slot);
      return status;
    }
    const auto id = static_cast<long long>(token_ids(i, t));
    if (id < 0 || id >= static_cast<long long>(logits.cols)) {
      status.bad_token_id = make_issue(slot, i, t, id);
      zero_row(slot);
      return status;
    }
    const matrix_row<Logits> row{logits, slot};
    const auto r = math::row_softmax<acc>(row, logits.cols, inv_temperature);
    if (!r.finite) {
      status.nonfinite_logits = make_issue(slot, i, t, 0);
    }
    acc g_entropy = acc(0);
    if constexpr (with_entropy) {
      g_entropy = static_cast<acc>(grad_entropy(i, t));
    }
    math::row_token_log_prob_grad(row, logits.cols, static_cast<index_t>(id), r.stats,
                                  inv_temperature, static_cast<acc>(grad_log_probs(i, t)),
                                  g_entropy, accumulate, matrix_row<GradLogits>{grad_logits, slot});
    return status;
  }
};

template <class Ids>
void check_token_id_type() {
  using id_type = typename Ids::value_type;
  static_assert(std::is_integral_v<id_type>, "rlcore: token_ids must hold integers");
}

template <class Layout, class Logits, class Ids, class LogProbs, class Entropy, class Space>
void run_token_log_probs(const char* function, const Layout& layout, const Logits& logits,
                         const Ids& ids, const LogProbs& log_probs, const Entropy& entropy,
                         const logits_options& options, const execution_context<Space>& ctx,
                         bool flat) {
  using acc = math::logit_accumulator<typename Logits::value_type>;
  const acc inv_temperature = inverse_temperature<acc>(function, options);
  const token_log_probs_op<Layout, Logits, Ids, LogProbs, Entropy> op{
      layout, logits, ids, log_probs, entropy, inv_temperature};
  const logits_status status = ctx.reduce_tokens(layout, logits_status{}, op);
  throw_on_issues(function, status, logits.cols, flat, options);
}

template <class Layout, class Logits, class Ids, class GradLogProbs, class GradEntropy,
          class GradLogits, class Space>
void run_token_log_probs_backward(const char* function, const Layout& layout, const Logits& logits,
                                  const Ids& ids, const GradLogProbs& grad_log_probs,
                                  const GradEntropy& grad_entropy, const GradLogits& grad_logits,
                                  const logits_options& options,
                                  const execution_context<Space>& ctx, bool flat) {
  using acc = math::logit_accumulator<typename Logits::value_type>;
  const acc inv_temperature = inverse_temperature<acc>(function, options);
  const token_log_probs_backward_op<Layout, Logits, Ids, GradLogProbs, GradEntropy, GradLogits> op{
      layout,
      logits,
      ids,
      grad_log_probs,
      grad_entropy,
      grad_logits,
      inv_temperature,
      options.accumulate_gradient};
  const logits_status status = ctx.reduce_tokens(layout, logits_status{}, op);
  throw_on_issues(function, status, logits.cols, flat, options);
}

/// Binds an optional per-token argument through the layout (no_token_tensor stays absent).
template <class Layout, class X>
auto bind_logits_optional(const Layout& layout, const char* function, const char* argument, X& x) {
  if constexpr (std::is_same_v<std::remove_cvref_t<X>, no_token_tensor>) {
    (void)layout;
    (void)function;
    (void)argument;
    return no_token_tensor{};
  } else {
    return layout.bind(function, argument, x);
  }
}

/// Flat per-token vector -> 1 x M row (after checking it has M entries); absent stays absent.
template <class X>
auto flat_logits_argument(const char* function, const char* argument, X& x, index_t m) {
  if constexpr (std::is_same_v<std::remove_cvref_t<X>, no_token_tensor>) {
    (void)function;
    (void)argument;
    (void)m;
    return no_token_tensor{};
  } else {
    auto v = as_vector_view(x);
    check_flat_size(function, argument, v, m);
    return as_single_row(v);
  }
}

template <class Layout, class Logits, class Ids, class LogProbs, class Entropy, class Space>
void token_log_probs_layout(const Layout& layout, const Logits& logits, const Ids& token_ids,
                            LogProbs& log_probs_out, Entropy& entropy_out,
                            const logits_options& options, const execution_context<Space>& ctx) {
  constexpr const char* function = "token_log_probs";
  const auto z = const_matrix_view(logits);
  check_logits_shape(function, "logits", z, layout.token_slots(),
                     "one per token slot of the layout");
  const auto ids = layout.bind(function, "token_ids", token_ids);
  const auto lp = layout.bind(function, "log_probs_out", log_probs_out);
  const auto h = bind_logits_optional(layout, function, "entropy_out", entropy_out);
  check_token_id_type<decltype(ids)>();
  run_token_log_probs(function, layout, z, ids, lp, h, options, ctx, false);
}

template <class Logits, class Ids, class LogProbs, class Entropy, class Space>
void token_log_probs_flat(const Logits& logits, const Ids& token_ids, LogProbs& log_probs_out,
                          Entropy& entropy_out, const logits_options& options,
                          const execution_context<Space>& ctx) {
  constexpr const char* function = "token_log_probs";
  const auto z = const_matrix_view(logits);
  check_logits_shape(function, "logits", z, z.rows, "one per token");
  const auto ids = flat_logits_argument(function, "token_ids", token_ids, z.rows);
  const auto lp = flat_logits_argument(function, "log_probs_out", log_probs_out, z.rows);
  const auto h = flat_logits_argument(function, "entropy_out", entropy_out, z.rows);
  check_token_id_type<decltype(ids)>();
  const auto layout = padded_unmasked<Space>(1, z.rows);
  run_token_log_probs(function, layout, z, ids, lp, h, options, ctx, true);
}

template <class Layout, class Logits, class Ids, class GradLogProbs, class GradEntropy,
          class GradLogits, class Space>
void token_log_probs_backward_layout(const Layout& layout, const Logits& logits,
                                     const Ids& token_ids, const GradLogProbs& grad_log_probs,
                                     const GradEntropy& grad_entropy, GradLogits& grad_logits_out,
                                     const logits_options& options,
                                     const execution_context<Space>& ctx) {
  constexpr const char* function = "token_log_probs_backward";
  const auto z = const_matrix_view(logits);
  check_logits_shape(function, "logits", z, layout.token_slots(),
                     "one per token slot of the layout");
  const auto ids = layout.bind(function, "token_ids", token_ids);
  const auto g_lp = layout.bind(function, "grad_log_probs", grad_log_probs);
  const auto g_h = bind_logits_optional(layout, function, "grad_entropy", grad_entropy);
  const auto g_z = as_matrix_view(grad_logits_out);
  require(g_z.rows == z.rows && g_z.cols == z.cols, function, "grad_logits_out", "expected shape (",
          z.rows, ", ", z.cols, ") like logits, got (", g_z.rows, ", ", g_z.cols, ")");
  check_token_id_type<decltype(ids)>();
  run_token_log_probs_backward(function, layout, z, ids, g_lp, g_h, g_z, options, ctx, false);
}

template <class Logits, class Ids, class GradLogProbs, class GradEntropy, class GradLogits,
          class Space>
void token_log_probs_backward_flat(const Logits& logits, const Ids& token_ids,
                                   const GradLogProbs& grad_log_probs,
                                   const GradEntropy& grad_entropy, GradLogits& grad_logits_out,
                                   const logits_options& options,
                                   const execution_context<Space>& ctx) {
  constexpr const char* function = "token_log_probs_backward";
  const auto z = const_matrix_view(logits);
  check_logits_shape(function, "logits", z, z.rows, "one per token");
  const auto ids = flat_logits_argument(function, "token_ids", token_ids, z.rows);
  const auto g_lp = flat_logits_argument(function, "grad_log_probs", grad_log_probs, z.rows);
  const auto g_h = flat_logits_argument(function, "grad_entropy", grad_entropy, z.rows);
  const auto g_z = as_matrix_view(grad_logits_out);
  require(g_z.rows == z.rows && g_z.cols == z.cols, function, "grad_logits_out", "expected shape (",
          z.rows, ", ", z.cols, ") like logits, got (", g_z.rows, ", ", g_z.cols, ")");
  check_token_id_type<decltype(ids)>();
  const auto layout = padded_unmasked<Space>(1, z.rows);
  run_token_log_probs_backward(function, layout, z, ids, g_lp, g_h, g_z, options, ctx, true);
}

} // namespace detail

// ---- forward ------------------------------------------------------------------------------------

/// Log-prob of each token: log_probs_out[r] = x[r, id_r] - logsumexp(x[r, :]), x = logits / tau.
/// logits: M x V matrix_like (V >= 1); token_ids: M integers in [0, V); log_probs_out: M reals.
/// Throws rlcore::invalid_argument for shape mismatches, ids outside [0, V), tau <= 0, and
/// (options.nonfinite_logits == error, the default) NaN / inf logits.
template <matrix_like Logits, vector_like TokenIds, class LogProbs>
requires mutable_vector_like<LogProbs>
void token_log_probs(const Logits& logits, const TokenIds& token_ids, LogProbs&& log_probs_out,
                     const logits_options& options = {},
                     const execution_context<memory_space_of<Logits>>& ctx = {}) {
  detail::no_token_tensor none;
  detail::token_log_probs_flat(logits, token_ids, log_probs_out, none, options, ctx);
}

/// As above, plus the entropy of each row: entropy_out[r] = -sum_v p_v log p_v, p = softmax(x).
template <matrix_like Logits, vector_like TokenIds, class LogProbs, class Entropy>
requires mutable_vector_like<LogProbs> && mutable_vector_like<Entropy>
void token_log_probs(const Logits& logits, const TokenIds& token_ids, LogProbs&& log_probs_out,
                     Entropy&& entropy_out, const logits_options& options = {},
                     const execution_context<memory_space_of<Logits>>& ctx = {}) {
  detail::token_log_probs_flat(logits, token_ids, log_probs_out, entropy_out, options, ctx);
}

/// Layout form: token slot (i, t) reads logits row i * T + t (padded) or offsets[i] + t (packed);
/// token_ids and log_probs_out are per-token tensors of the layout. Masked slots get exactly 0
/// and their logits are not read.
template <batch_layout Layout, matrix_like Logits, class TokenIds, class LogProbs>
requires token_tensor_for<const TokenIds, Layout> && mutable_token_tensor_for<LogProbs, Layout>
void token_log_probs(const Layout& layout, const Logits& logits, const TokenIds& token_ids,
                     LogProbs&& log_probs_out, const logits_options& options = {},
                     const execution_context<typename Layout::space>& ctx = {}) {
  detail::no_token_tensor none;
  detail::token_log_probs_layout(layout, logits, token_ids, log_probs_out, none, options, ctx);
}

/// Layout form with entropy_out (a per-token tensor of the layout; masked slots get 0).
template <batch_layout Layout, matrix_like Logits, class TokenIds, class LogProbs, class Entropy>
requires token_tensor_for<const TokenIds, Layout> && mutable_token_tensor_for<
    LogProbs, Layout> && mutable_token_tensor_for<Entropy, Layout>
void token_log_probs(const Layout& layout, const Logits& logits, const TokenIds& token_ids,
                     LogProbs&& log_probs_out, Entropy&& entropy_out,
                     const logits_options& options = {},
                     const execution_context<typename Layout::space>& ctx = {}) {
  detail::token_log_probs_layout(layout, logits, token_ids, log_probs_out, entropy_out, options,
                                 ctx);
}

// ---- backward -----------------------------------------------------------------------------------

/// Gradient of sum_r g_lp[r] lp[r] (+ g_H[r] H[r]) w.r.t. the logits, row by row:
///   grad_logits_out[r, j] = (g_lp[r] (1[j == id_r] - p_j) - g_H[r] p_j (log p_j + H_r)) / tau
/// (the entropy term is 0 where p_j == 0). grad_log_probs (and grad_entropy): M reals;
/// grad_logits_out: M x V like logits, overwritten, or added to when options.accumulate_gradient.
/// grad_logits_out may be the logits buffer itself (in-place, overwrite mode only). Same
/// validation as the forward.
template <matrix_like Logits, vector_like TokenIds, vector_like GradLogProbs, class GradLogits>
requires mutable_matrix_like<GradLogits>
void token_log_probs_backward(const Logits& logits, const TokenIds& token_ids,
                              const GradLogProbs& grad_log_probs, GradLogits&& grad_logits_out,
                              const logits_options& options = {},
                              const execution_context<memory_space_of<Logits>>& ctx = {}) {
  const detail::no_token_tensor none;
  detail::token_log_probs_backward_flat(logits, token_ids, grad_log_probs, none, grad_logits_out,
                                        options, ctx);
}

/// As above with the entropy's upstream gradient grad_entropy (M reals).
template <matrix_like Logits, vector_like TokenIds, vector_like GradLogProbs,
          vector_like GradEntropy, class GradLogits>
requires mutable_matrix_like<GradLogits>
void token_log_probs_backward(const Logits& logits, const TokenIds& token_ids,
                              const GradLogProbs& grad_log_probs, const GradEntropy& grad_entropy,
                              GradLogits&& grad_logits_out, const logits_options& options = {},
                              const execution_context<memory_space_of<Logits>>& ctx = {}) {
  detail::token_log_probs_backward_flat(logits, token_ids, grad_log_probs, grad_entropy,
                                        grad_logits_out, options, ctx);
}

/// Layout form of the backward: masked slots get a zero row (or are left untouched when
/// accumulating); grad_log_probs is a per-token tensor of the layout.
template <batch_layout Layout, matrix_like Logits, class TokenIds, class GradLogProbs,
          class GradLogits>
requires token_tensor_for<const TokenIds, Layout> && token_tensor_for<
    const GradLogProbs, Layout> && mutable_matrix_like<GradLogits>
void token_log_probs_backward(const Layout& layout, const Logits& logits, const TokenIds& token_ids,
                              const GradLogProbs& grad_log_probs, GradLogits&& grad_logits_out,
                              const logits_options& options = {},
                              const execution_context<typename Layout::space>& ctx = {}) {
  const detail::no_token_tensor none;
  detail::token_log_probs_backward_layout(layout, logits, token_ids, grad_log_probs, none,
                                          grad_logits_out, options, ctx);
}

/// Layout form of the backward with grad_entropy (a per-token tensor of the layout).
template <batch_layout Layout, matrix_like Logits, class TokenIds, class GradLogProbs,
          class GradEntropy, class GradLogits>
requires token_tensor_for<const TokenIds, Layout> && token_tensor_for<
    const GradLogProbs, Layout> && token_tensor_for<const GradEntropy,
                                                    Layout> && mutable_matrix_like<GradLogits>
void token_log_probs_backward(const Layout& layout, const Logits& logits, const TokenIds& token_ids,
                              const GradLogProbs& grad_log_probs, const GradEntropy& grad_entropy,
                              GradLogits&& grad_logits_out, const logits_options& options = {},
                              const execution_context<typename Layout::space>& ctx = {}) {
  detail::token_log_probs_backward_layout(layout, logits, token_ids, grad_log_probs, grad_entropy,
                                          grad_logits_out, options, ctx);
}

} // namespace rlcore
