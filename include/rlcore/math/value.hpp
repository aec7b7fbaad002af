// Clipped value loss (PPO critic), per token: value and exact gradient with respect to v.
//
//   v_clip = clamp(v, v_old - c, v_old + c)
//   l      = 0.5 * max((v - R)^2, (v_clip - R)^2)
//   dl/dv  = v - R where the unclipped branch wins (ties included), else (v_clip - R) * 1[inside],
//            which is 0 because the clipped branch can only win strictly with v outside the range.
#pragma once

#include "../config.hpp"
#include "functions.hpp"

namespace rlcore::math {

template <real T>
struct value_loss_term {
  T value;
  T gradient;
  bool clipped; ///< the clipped branch wins strictly
};

/// One token of the clipped value loss (clip_range c >= 0; +infinity disables the clip).
template <real T>
RLCORE_HD constexpr value_loss_term<T> clipped_value_loss(T v, T v_old, T ret, T clip_range) {
  const T unclipped_error = v - ret;
  const T v_clip = clamp(v, v_old - clip_range, v_old + clip_range);
  const T clipped_error = v_clip - ret;
  const T unclipped = T(0.5) * unclipped_error * unclipped_error;
  const T clipped = T(0.5) * clipped_error * clipped_error;
  if (clipped > unclipped) {
    const bool inside = v > v_old - clip_range && v < v_old + clip_range;
    return {clipped, inside ? clipped_error : T(0), true};
  }
  return {unclipped, unclipped_error, false};
}

} // namespace rlcore::math
