// What the logits algorithms (logits.hpp, logits_kl.hpp) share: options, the per-token status
// that validation reduces over, row accessors, the token slot -> logits row map and the checks.
//
// Shape legend: V vocabulary size; M token slots (rows of the logits matrix). With a batch layout,
// token slot (i, t) is logits row i * T + t (padded N x T) or offsets[i] + t (packed); without a
// layout (the "flat" overloads) M = logits.rows() and per-token vectors have M entries.
#pragma once

#include "../config.hpp"
#include "../error.hpp"
#include "../math/functions.hpp"
#include "../math/softmax.hpp"
#include "../tensor/concepts.hpp"
#include "../tensor/layout.hpp"
#include "../tensor/views.hpp"

#include <type_traits>

namespace rlcore {

/// What to do with a NaN or +-inf logit in a valid (unmasked) row.
enum class nonfinite_logits_policy {
  error,     ///< throw rlcore::invalid_argument naming `logits` and the first such row (default)
  propagate, ///< no check: -inf logits get probability 0 (a vocabulary mask); NaN / +inf give NaN
};

/// Options of every logits algorithm.
struct logits_options {
  /// tau: the logits are divided by it before the softmax (gradients account for it). tau > 0,
  /// finite, with 1 / tau finite in the accumulator type. Default 1.
  double temperature = 1.0;
  /// Backward passes only: add the gradient into grad_logits_out (llm.c convention: masked rows
  /// are left untouched) instead of overwriting it (masked rows get 0). Default false.
  bool accumulate_gradient = false;
  /// Non-finite logits in valid rows (and, for the KL, in ref_logits): error by default.
  nonfinite_logits_policy nonfinite_logits = nonfinite_logits_policy::error;
};

namespace detail {

/// A token slot that failed a check: (i, t) in the layout, its logits row, and a value.
struct logits_token_issue {
  index_t slot = -1; ///< logits row; -1: no issue
  index_t row = 0;
  index_t token = 0;
  long long value = 0;

  RLCORE_HD void keep_first(const logits_token_issue& other) {
    if (other.slot >= 0 && (slot < 0 || other.slot < slot)) {
      *this = other;
    }
  }
};

/// Reduced over all token slots (operator+= keeps the first issue of each kind, so the result is
/// independent of the reduction order).
struct logits_status {
  logits_token_issue bad_token_id;
  logits_token_issue nonfinite_logits;
  logits_token_issue nonfinite_ref_logits;

  RLCORE_HD logits_status& operator+=(const logits_status& other) {
    bad_token_id.keep_first(other.bad_token_id);
    nonfinite_logits.keep_first(other.nonfinite_logits);
    nonfinite_ref_logits.keep_first(other.nonfinite_ref_logits);
    return *this;
  }
};

/// Row r of a matrix view as a row accessor: row(j) is m(r, j).
template <class View>
struct matrix_row {
  View matrix;
  index_t row;
  RLCORE_HD constexpr auto& operator()(index_t j) const { return matrix(row, j); }
};

/// Marks an absent optional per-token argument (entropy_out, grad_entropy).
struct no_token_tensor {};

/// The logits row of token slot (i, t): i * T + t (padded) or offsets[i] + t (packed).
template <class Layout>
RLCORE_HD constexpr index_t logits_row_of(const Layout& layout, index_t i, index_t t) {
  if constexpr (Layout::is_packed) {
    return layout.row_begin(i) + t;
  } else {
    return i * layout.cols() + t;
  }
}

/// The 1 x M matrix view of a vector view (the flat overloads run on a 1 x M padded layout).
template <class T, class Space>
constexpr matrix_view<T, Space> as_single_row(vector_view<T, Space> v) {
  return {v.data, 1, v.size, v.size * v.stride, v.stride};
}

/// A const matrix view of a matrix_like argument.
template <matrix_like X>
auto const_matrix_view(const X& x) {
  auto v = as_matrix_view(x);
  using E = typename decltype(v)::value_type;
  using S = typename decltype(v)::space;
  return matrix_view<const E, S>{v.data, v.rows, v.cols, v.row_stride, v.col_stride};
}

/// A const vector view of a vector_like argument.
template <vector_like X>
auto const_vector_view(const X& x) {
  auto v = as_vector_view(x);
  using E = typename decltype(v)::value_type;
  using S = typename decltype(v)::space;
  return vector_view<const E, S>{v.data, v.size, v.stride};
}

/// 1 / temperature in Acc after checking tau > 0, finite, and 1 / tau finite in Acc.
template <class Acc>
Acc inverse_temperature(const char* function, const logits_options& options) {
  const double tau = options.temperature;
  const auto inv = static_cast<Acc>(1.0 / tau);
  require(tau > 0.0 && math::isfinite(tau) && math::isfinite(inv), function, "options.temperature",
          "expected a finite temperature > 0 whose inverse is finite, got ", tau);
  return inv;
}

/// Checks a logits matrix: V >= 1 columns and `rows` rows.
template <class View>
void check_logits_shape(const char* function, const char* argument, const View& logits,
                        index_t rows, const char* rows_meaning) {
  require(logits.cols >= 1, function, argument, "expected a vocabulary of at least 1 column, got ",
          logits.cols);
  require(logits.rows == rows, function, argument, "expected ", rows, " rows (", rows_meaning,
          "), got ", logits.rows);
}

/// Checks that a flat per-token vector has M entries.
template <class View>
void check_flat_size(const char* function, const char* argument, const View& v, index_t m) {
  require(v.size == m, function, argument, "expected ", m, " entries (one per logits row), got ",
          v.size);
}

/// Throws for the first issue found by a pass (token ids first, then non-finite logits).
inline void throw_on_issues(const char* function, const logits_status& status, index_t vocab,
                            bool flat, const logits_options& options) {
  const auto& id = status.bad_token_id;
  if (id.slot >= 0) {
    if (flat) {
      throw_invalid(function, "token_ids", "expected token ids in [0, V) = [0, ", vocab,
                    "), got token_ids[", id.slot, "] = ", id.value);
    }
    throw_invalid(function, "token_ids", "expected token ids in [0, V) = [0, ", vocab,
                  "), got token_ids(", id.row, ", ", id.token, ") = ", id.value, " (logits row ",
                  id.slot, ")");
  }
  if (options.nonfinite_logits != nonfinite_logits_policy::error) {
    return;
  }
  if (status.nonfinite_logits.slot >= 0) {
    throw_invalid(function, "logits",
                  "expected finite logits in every valid row (options.nonfinite_logits == error), "
                  "got a NaN or inf in logits row ",
                  status.nonfinite_logits.slot);
  }
  if (status.nonfinite_ref_logits.slot >= 0) {
    throw_invalid(function, "ref_logits",
                  "expected finite logits in every valid row (options.nonfinite_logits == error), "
                  "got a NaN or inf in ref_logits row ",
                  status.nonfinite_ref_logits.slot);
  }
}

/// Records token slot (i, t) with logits row `slot` in `issue`.
RLCORE_HD inline logits_token_issue make_issue(index_t slot, index_t i, index_t t,
                                               long long value) {
  logits_token_issue issue;
  issue.slot = slot;
  issue.row = i;
  issue.token = t;
  issue.value = value;
  return issue;
}

} // namespace detail
} // namespace rlcore
