// KL coefficient controllers (Ziegler et al. 2019, as in TRL / verl / OpenRLHF):
//   fixed_kl_controller      beta constant
//   adaptive_kl_controller   e = clip(KL / target - 1, -0.2, 0.2); beta *= 1 + e * n_steps /
//   horizon
// Host-side state: call update(observed_kl, n_steps) once per batch, then read value().
// beta stays finite and >= 0 for every input validation accepts: horizon >= 1 bounds the factor
// by 1 + 0.2 n_steps, the factor is floored at 0 and beta saturates at the largest double.
#pragma once

#include "../config.hpp"
#include "../error.hpp"

#include <cmath>
#include <limits>

namespace rlcore {

/// A constant KL coefficient.
class fixed_kl_controller {
public:
  /// beta >= 0 (finite).
  explicit fixed_kl_controller(double beta) : beta_(beta) {
    detail::require(beta >= 0 && std::isfinite(beta), "fixed_kl_controller", "beta",
                    "expected finite beta >= 0, got ", beta);
  }
  [[nodiscard]] double value() const { return beta_; }
  /// No-op (same signature as the adaptive controller).
  void update(double /*observed_kl*/, index_t /*n_steps*/) {}

private:
  double beta_;
};

/// Adaptive KL coefficient: moves beta so that the observed KL tracks `target`.
class adaptive_kl_controller {
public:
  /// initial_beta >= 0, target > 0, horizon >= 1 (all finite). The horizon is a number of steps
  /// (TRL and verl use 10000): n_steps / horizon is the fraction of it covered by one update.
  adaptive_kl_controller(double initial_beta, double target, double horizon)
      : beta_(initial_beta), target_(target), horizon_(horizon) {
    detail::require(initial_beta >= 0 && std::isfinite(initial_beta), "adaptive_kl_controller",
                    "initial_beta", "expected finite beta >= 0, got ", initial_beta);
    detail::require(target > 0 && std::isfinite(target), "adaptive_kl_controller", "target",
                    "expected finite target > 0, got ", target);
    detail::require(horizon >= 1 && std::isfinite(horizon), "adaptive_kl_controller", "horizon",
                    "expected a finite horizon >= 1 (a number of steps), got ", horizon);
  }

  [[nodiscard]] double value() const { return beta_; }
  [[nodiscard]] double target() const { return target_; }
  [[nodiscard]] double horizon() const { return horizon_; }

  /// e = clip(observed_kl / target - 1, -0.2, 0.2); beta *= 1 + e * n_steps / horizon (beta is
  /// floored at 0 when n_steps > 5 * horizon would make the factor negative, and saturates at the
  /// largest finite double instead of overflowing to inf).
  /// observed_kl must be finite, n_steps >= 0 (the number of samples/steps since the last update).
  void update(double observed_kl, index_t n_steps) {
    detail::require(std::isfinite(observed_kl), "adaptive_kl_controller::update", "observed_kl",
                    "expected a finite KL, got ", observed_kl);
    detail::require(n_steps >= 0, "adaptive_kl_controller::update", "n_steps",
                    "expected n_steps >= 0, got ", n_steps);
    double error = observed_kl / target_ - 1.0;
    error = error < -0.2 ? -0.2 : (error > 0.2 ? 0.2 : error);
    const double factor = 1.0 + error * static_cast<double>(n_steps) / horizon_;
    constexpr double largest = std::numeric_limits<double>::max();
    // n_steps > 5 * horizon could flip the sign; 1 <= factor <= 1 + 0.2 n_steps can overflow beta
    const double next = factor > 0 ? beta_ * factor : 0.0;
    beta_ = next < largest ? next : largest;
  }

private:
  double beta_;
  double target_;
  double horizon_;
};

} // namespace rlcore
