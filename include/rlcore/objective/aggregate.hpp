// Aggregation of per-token losses l[i, t] over the valid tokens of a batch (mask m):
//
//   mode                      loss                                         token weight w[i, t]
//   token_mean                sum(l m) / N_tokens                          1 / N_tokens
//   token_sum                 sum(l m)                                     1
//   seq_mean_token_sum        sum_i sum_t l m / N_seqs                     1 / N_seqs
//   seq_mean_token_mean       sum_i [sum_t l m / n_i] / N_seqs             1 / (N_seqs * n_i)
//   seq_mean_token_sum_norm   sum_i sum_t l m / (N_seqs * L)   (Dr. GRPO)  1 / (N_seqs * L)
//
// n_i is the number of valid tokens of row i (rows with n_i = 0 contribute 0). N_tokens and
// N_seqs default to the local counts (valid tokens; rows of the layout, all-masked rows included);
// a trainer splitting a batch into micro-batches or data-parallel ranks passes the global counts,
// and then the micro-batch losses and gradients sum to the whole batch's. L has no default: the
// caller gives the constant (Dr. GRPO uses the generation budget, the maximum response length).
// Every weight is constant within a row, so a generic algorithm binds one `aggregation_weights`
// (device-copyable) and, for seq_mean_token_mean, the per-row valid counts.
#pragma once

#include "../config.hpp"
#include "../error.hpp"
#include "../execution.hpp"
#include "../tensor/layout.hpp"

#include <cstdint>
#include <type_traits>

namespace rlcore {

/// How per-token losses are reduced to one scalar (see objective/aggregate.hpp).
enum class aggregation {
  token_mean,
  token_sum,
  seq_mean_token_sum,
  seq_mean_token_mean,
  seq_mean_token_sum_norm
};

/// Aggregation mode and the normalisers a micro-batched trainer passes explicitly.
struct aggregation_options {
  aggregation mode = aggregation::token_mean;
  /// N_tokens for token_mean: -1 = the local number of valid tokens; otherwise >= that number.
  double global_tokens = -1;
  /// N_seqs for the seq_mean_* modes: -1 = the local number of rows N; otherwise >= N.
  double global_sequences = -1;
  /// Dr. GRPO constant L (> 0) for seq_mean_token_sum_norm; unused by the other modes.
  double length_normalizer = 0;
};

/// The resolved, device-copyable token weights: w[i, t] = scale for every mode except
/// seq_mean_token_mean, where w[i, t] = scale / n_i (0 when n_i == 0).
struct aggregation_weights {
  double scale = 1;
  bool divide_by_row_count = false;

  [[nodiscard]] RLCORE_HD constexpr double row_weight(double row_valid_count) const {
    if (!divide_by_row_count) {
      return scale;
    }
    return row_valid_count > 0 ? scale / row_valid_count : 0.0;
  }
};

namespace detail {

/// Whether a layout has a mask to read (true for a layout type other than padded / packed, so
/// that its tokens are read one by one through valid()).
template <class Layout>
RLCORE_DETAIL_FORCE_INLINE bool layout_has_mask(const Layout& layout) {
  if constexpr (requires { layout.mask.data; }) {
    return layout.mask.data != nullptr;
  } else {
    return true;
  }
}

/// Pointer to the mask of token (i, t0) when the layout has a mask that is contiguous along the
/// row, else null.
template <class Layout>
RLCORE_DETAIL_FORCE_INLINE auto* contiguous_mask_row(const Layout& layout, index_t i, index_t t0) {
  if constexpr (!requires { layout.mask.data; }) {
    return static_cast<const unsigned char*>(nullptr);
  } else {
    using pointer = const typename Layout::mask_type*;
    if (layout.mask.data == nullptr) {
      return pointer(nullptr);
    }
    if constexpr (Layout::is_packed) {
      return layout.mask.stride == 1 ? layout.mask.data + layout.row_begin(i) + t0
                                     : pointer(nullptr);
    } else {
      return layout.mask.col_stride == 1 ? &layout.mask(i, t0) : pointer(nullptr);
    }
  }
}

/// Number of valid tokens of row i, on the host: a count over the row's mask when it is
/// contiguous (a loop the compiler vectorises), valid(i, t) token by token otherwise.
template <class Layout>
RLCORE_DETAIL_FORCE_INLINE index_t host_row_valid_count(const Layout& layout, index_t i) {
  const index_t len = layout.row_length(i);
  if (!layout_has_mask(layout)) {
    return len;
  }
  index_t count = 0;
  if (const auto* mask = contiguous_mask_row(layout, i, 0); mask != nullptr) {
    using mask_type = std::remove_cvref_t<decltype(*mask)>;
    constexpr index_t piece = index_t(1) << 20; // a 32-bit count per piece: narrow vector lanes
    for (index_t t0 = 0; t0 < len; t0 += piece) {
      const index_t t1 = len - t0 < piece ? len : t0 + piece;
      std::uint32_t piece_count = 0;
      for (index_t t = t0; t < t1; ++t) {
        piece_count += mask[t] != mask_type(0) ? 1U : 0U;
      }
      count += piece_count;
    }
    return count;
  }
  for (index_t t = 0; t < len; ++t) {
    count += layout.valid(i, t) ? 1 : 0;
  }
  return count;
}

/// 1 for a valid token slot, 0 otherwise (the summand of a valid-token count).
template <class Layout>
struct valid_token_indicator {
  Layout layout;
  RLCORE_HD double operator()(index_t i, index_t t) const { return layout.valid(i, t) ? 1.0 : 0.0; }

  // host whole-row form (execution_context<host_space>::reduce_rows): the row's valid count
  [[nodiscard]] bool host_row_sum_enabled() const { return true; }
  [[nodiscard]] double host_row_sum(index_t i) const {
    return static_cast<double>(host_row_valid_count(layout, i));
  }
};

/// Number of valid tokens of a layout (no pass over memory when a padded layout has no mask).
template <class Layout, class Space>
double count_valid_tokens(const Layout& layout, const execution_context<Space>& ctx) {
  if (layout.mask.data == nullptr) {
    return static_cast<double>(layout.token_slots());
  }
  return ctx.reduce_tokens(layout, 0.0, valid_token_indicator<Layout>{layout});
}

/// Checks the aggregation options that need no token count; throws naming `options.<field>`.
inline void validate_aggregation_options(const char* function, const aggregation_options& options,
                                         index_t rows) {
  const bool global_tokens_ok = options.global_tokens == -1 || options.global_tokens >= 0;
  require(global_tokens_ok, function, "aggregation.global_tokens",
          "expected -1 (the local count) or a count >= 0, got ", options.global_tokens);
  const bool global_sequences_ok =
      options.global_sequences == -1 || options.global_sequences >= static_cast<double>(rows);
  require(global_sequences_ok, function, "aggregation.global_sequences",
          "expected -1 (the local count) or a count >= the local number of sequences ", rows,
          ", got ", options.global_sequences);
  if (options.mode == aggregation::seq_mean_token_sum_norm) {
    require(options.length_normalizer > 0, function, "aggregation.length_normalizer",
            "expected the Dr. GRPO constant L > 0 for seq_mean_token_sum_norm, got ",
            options.length_normalizer);
  }
  const int mode = static_cast<int>(options.mode);
  require(mode >= 0 && mode <= static_cast<int>(aggregation::seq_mean_token_sum_norm), function,
          "aggregation.mode", "expected an rlcore::aggregation value, got ", mode);
}

/// Resolves the token weights. `local_tokens` is the local number of valid tokens (needed only
/// for token_mean without global_tokens; pass a negative value when not yet known).
inline aggregation_weights resolve_aggregation(const aggregation_options& options, index_t rows,
                                               double local_tokens) {
  const double sequences =
      options.global_sequences == -1 ? static_cast<double>(rows) : options.global_sequences;
  const double tokens = options.global_tokens == -1 ? local_tokens : options.global_tokens;
  switch (options.mode) {
  case aggregation::token_mean:
    return {tokens > 0 ? 1.0 / tokens : 0.0, false};
  case aggregation::token_sum:
    return {1.0, false};
  case aggregation::seq_mean_token_sum:
    return {sequences > 0 ? 1.0 / sequences : 0.0, false};
  case aggregation::seq_mean_token_mean:
    return {sequences > 0 ? 1.0 / sequences : 0.0, true};
  case aggregation::seq_mean_token_sum_norm:
    return {sequences > 0 ? 1.0 / (sequences * options.length_normalizer) : 0.0, false};
  }
  return {};
}

/// Validates, counts valid tokens if token_mean needs the local count, and resolves the weights.
template <class Layout, class Space>
aggregation_weights prepare_aggregation(const char* function, const aggregation_options& options,
                                        const Layout& layout, const execution_context<Space>& ctx) {
  validate_aggregation_options(function, options, layout.rows());
  double local_tokens = -1;
  if (options.mode == aggregation::token_mean && options.global_tokens == -1) {
    local_tokens = count_valid_tokens(layout, ctx);
  }
  return resolve_aggregation(options, layout.rows(), local_tokens);
}

/// After the fused pass (which counts valid tokens): a global token count below the local one is
/// an error.
inline void check_global_tokens(const char* function, const aggregation_options& options,
                                double local_tokens) {
  if (options.mode == aggregation::token_mean && options.global_tokens != -1) {
    require(options.global_tokens >= local_tokens, function, "aggregation.global_tokens",
            "expected a count >= the local number of valid tokens ", local_tokens, ", got ",
            options.global_tokens);
  }
}

/// Per-row valid-token counts n_i into `out` (N doubles in the context's memory).
template <class Layout, class Space>
void row_valid_counts(const Layout& layout, double* out, const execution_context<Space>& ctx) {
  ctx.reduce_rows(layout, out, valid_token_indicator<Layout>{layout});
}

} // namespace detail
} // namespace rlcore
