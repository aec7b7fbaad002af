// Checks of the host fast path behind the CPU benchmark: the branch-free float exp, the bitwise
// select, and the chunked token loop of the fused objective (execution_context<host_space>::
// reduce_tokens with policy_token_pass's host chunk form) against an independent reference loop
// written from the formulas (ALGORITHMS.md: clipped surrogate, k3, seq-mean-token-mean), for row
// lengths that are not multiples of the chunk width, packed and strided layouts, and masked slots
// holding inf / NaN.
#include <rlcore/objective/grpo.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

using rlcore::index_t;
namespace m = rlcore::math;

// Distance in units in the last place of the float result y from the exact value e^x (double).
double ulp_error(float x, float y) {
  const double exact = std::exp(double(x));
  const auto rounded = static_cast<float>(exact);
  const int exponent = std::max(std::ilogb(rounded), -126);
  return std::abs(double(y) - exact) / std::ldexp(1.0, exponent - 23);
}

} // namespace

TEST_CASE("exp_vectorizable<float> is within 1 ulp of e^x on a dense grid of [-103, 88.7]") {
  double worst = 0;
  for (int j = 0; j <= 2000000; ++j) {
    const float x = -103.0f + 191.7f * float(j) / 2000000.0f;
    worst = std::max(worst, ulp_error(x, m::exp_vectorizable(x)));
  }
  // The exhaustive sweep of every float in [-110, 95] measured a maximum of 0.99 ulp.
  CHECK(worst < 1.0);
}

TEST_CASE("exp_vectorizable<float>: exact points, overflow, underflow, NaN") {
  CHECK(m::exp_vectorizable(0.0f) == 1.0f);
  CHECK(m::exp_vectorizable(-0.0f) == 1.0f);
  CHECK(m::exp_vectorizable(1.0f) == doctest::Approx(2.718281828).epsilon(2e-7));
  CHECK(m::exp_vectorizable(88.72f) == doctest::Approx(std::exp(double(88.72f))).epsilon(2e-7));
  CHECK(std::isinf(m::exp_vectorizable(88.73f))); // e^88.73 > FLT_MAX
  CHECK(std::isinf(m::exp_vectorizable(1e30f)));
  CHECK(std::isinf(m::exp_vectorizable(std::numeric_limits<float>::infinity())));
  CHECK(m::exp_vectorizable(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(m::exp_vectorizable(-1e30f) == 0.0f);
  // gradual underflow: e^-100 = 3.72e-44 is a denormal float (26 units of 2^-149)
  CHECK(m::exp_vectorizable(-100.0f) == doctest::Approx(3.720076e-44).epsilon(0.05));
  CHECK(std::isnan(m::exp_vectorizable(std::numeric_limits<float>::quiet_NaN())));
  // double is math::exp itself
  CHECK(m::exp_vectorizable(0.5) == m::exp(0.5));
}

TEST_CASE("select is ?: bit for bit (NaN, signed zero, infinities)") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(m::select(true, nan, 1.0)));
  CHECK(m::select(false, nan, 1.0) == 1.0);
  CHECK(std::signbit(m::select(true, -0.0f, 0.0f)));
  CHECK_FALSE(std::signbit(m::select(false, -0.0f, 0.0f)));
  CHECK(m::select(true, std::numeric_limits<float>::infinity(), 0.0f) > 1e38f);
  // clamp / abs / sign / min / max keep their ?: semantics
  CHECK(m::clamp(5.0, -1.0, 2.0) == 2.0);
  CHECK(m::clamp(-5.0f, -1.0f, 2.0f) == -1.0f);
  CHECK(std::isnan(m::clamp(nan, -1.0, 2.0)));
  CHECK(m::abs(-3.0f) == 3.0f);
  CHECK(m::sign(-2.0) == -1.0);
  CHECK(m::sign(0.0) == 0.0);
  CHECK(m::min(2.0, 1.0) == 1.0);
  CHECK(m::max(2.0f, 1.0f) == 2.0f);
}

namespace {

// A padded batch in double: rows x cols, mask with holes, rows of every length 0 .. cols.
struct batch {
  index_t rows = 0, cols = 0;
  std::vector<double> mask, lp, old, ref, adv;
};

batch make_batch(index_t rows, index_t cols, unsigned seed) {
  batch b;
  b.rows = rows;
  b.cols = cols;
  const auto n = static_cast<std::size_t>(rows * cols);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  b.mask.assign(n, 0);
  b.lp.resize(n);
  b.old.resize(n);
  b.ref.resize(n);
  b.adv.resize(n);
  for (index_t i = 0; i < rows; ++i) {
    const index_t length = (i * 7) % (cols + 1); // 0, 7, 14, ... : tails of every size
    for (index_t t = 0; t < cols; ++t) {
      const auto k = static_cast<std::size_t>(i * cols + t);
      b.mask[k] = (t < length && u(rng) < 0.85) ? 1 : 0;
      b.lp[k] = -4 * u(rng);
      b.old[k] = b.lp[k] + 0.8 * (u(rng) - 0.5); // ratios in [0.67, 1.5]: both clips active
      b.ref[k] = b.lp[k] + 1.6 * (u(rng) - 0.5); // k3 on both sides of |x| = 1/4
      b.adv[k] = 4 * u(rng) - 2;
      if (b.mask[k] == 0 && k % 3 == 0) { // masked slots may hold anything
        b.lp[k] = std::numeric_limits<double>::quiet_NaN();
        b.old[k] = std::numeric_limits<double>::infinity();
        b.adv[k] = -std::numeric_limits<double>::infinity();
      }
    }
  }
  return b;
}

struct reference_result {
  double loss = 0, policy_loss = 0, kl_loss = 0, clip_low = 0, clip_high = 0, valid = 0;
  double approx_kl = 0, kl_mean = 0, adv_mean = 0;
  std::vector<double> grad;
};

// GRPO (DeepSeekMath eq. 3, negated), written from the formulas: per valid token
//   r = exp(lp - old), l = max(-A r, -A clip(r, 1 - eps, 1 + eps)) + beta * (e^-x + x - 1),
//   x = lp - ref, weight 1 / (n_i * N) (seq-mean-token-mean over the N rows of the batch);
//   d l / d lp = -A r (unclipped branch, ties included) or 0, plus beta * (1 - e^-x).
reference_result reference(const batch& b, double eps, double beta) {
  reference_result r;
  r.grad.assign(b.mask.size(), 0.0);
  for (index_t i = 0; i < b.rows; ++i) {
    double n_i = 0;
    for (index_t t = 0; t < b.cols; ++t) {
      n_i += b.mask[static_cast<std::size_t>(i * b.cols + t)];
    }
    if (n_i == 0) {
      continue;
    }
    const double w = 1.0 / (n_i * double(b.rows));
    for (index_t t = 0; t < b.cols; ++t) {
      const auto k = static_cast<std::size_t>(i * b.cols + t);
      if (b.mask[k] == 0) {
        continue;
      }
      const double ratio = std::exp(b.lp[k] - b.old[k]);
      const double a = b.adv[k];
      const double unclipped = -a * ratio;
      const double clipped = -a * std::min(std::max(ratio, 1 - eps), 1 + eps);
      const bool clip = clipped > unclipped;
      const double x = b.lp[k] - b.ref[k];
      const double k3 = std::exp(-x) + x - 1;
      r.policy_loss += w * (clip ? clipped : unclipped);
      r.kl_loss += w * beta * k3;
      r.grad[k] = w * ((clip ? 0.0 : -a * ratio) + beta * (1 - std::exp(-x)));
      r.clip_low += (clip && ratio < 1 - eps) ? 1 : 0;
      r.clip_high += (clip && ratio > 1 + eps) ? 1 : 0;
      r.valid += 1;
      r.approx_kl += b.old[k] - b.lp[k];
      r.kl_mean += k3;
      r.adv_mean += a;
    }
  }
  r.loss = r.policy_loss + r.kl_loss;
  r.clip_low /= r.valid;
  r.clip_high /= r.valid;
  r.approx_kl /= r.valid;
  r.kl_mean /= r.valid;
  r.adv_mean /= r.valid;
  return r;
}

template <class T>
std::vector<T> as(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

template <class T>
void check_against_reference(const rlcore::objective_result& r, const std::vector<T>& grad,
                             const std::vector<double>& mask, const reference_result& expected,
                             double tolerance) {
  CHECK(r.loss == doctest::Approx(expected.loss).epsilon(tolerance));
  CHECK(r.metrics.policy_loss == doctest::Approx(expected.policy_loss).epsilon(tolerance));
  CHECK(r.metrics.kl_loss == doctest::Approx(expected.kl_loss).epsilon(tolerance));
  CHECK(r.metrics.valid_tokens == expected.valid);
  CHECK(r.metrics.clip_fraction_low == doctest::Approx(expected.clip_low));
  CHECK(r.metrics.clip_fraction_high == doctest::Approx(expected.clip_high));
  CHECK(r.metrics.approx_kl == doctest::Approx(expected.approx_kl).epsilon(tolerance));
  CHECK(r.metrics.kl_penalty_mean == doctest::Approx(expected.kl_mean).epsilon(tolerance));
  CHECK(r.metrics.advantage_mean == doctest::Approx(expected.adv_mean).epsilon(tolerance));
  for (std::size_t k = 0; k < grad.size(); ++k) {
    INFO("slot ", k);
    if (mask[k] == 0) {
      CHECK(grad[k] == T(0)); // exactly 0, whatever the slot held
    } else {
      CHECK(double(grad[k])
            == doctest::Approx(expected.grad[k]).epsilon(tolerance).scale(tolerance * 1e-3));
    }
  }
}

} // namespace

TEST_CASE_TEMPLATE("chunked GRPO loss equals the reference loop (padded, tails of every length)", T,
                   float, double) {
  const batch b = make_batch(9, 53, 11); // 53 = 3 * 16 + 5: full chunks and a tail
  const auto expected = reference(b, 0.2, 0.04);
  REQUIRE(expected.clip_low > 0);
  REQUIRE(expected.clip_high > 0);
  const auto lp = as<T>(b.lp), old = as<T>(b.old), ref = as<T>(b.ref), adv = as<T>(b.adv);
  std::vector<T> grad(b.mask.size(), T(-7));
  auto view = [&](const auto& x) { return rlcore::make_matrix_view(x.data(), b.rows, b.cols); };
  const auto layout = rlcore::padded(view(b.mask));
  rlcore::grpo_options options;
  const auto r =
      rlcore::grpo_objective(layout, view(lp), view(old), view(ref), view(adv),
                             rlcore::make_matrix_view(grad.data(), b.rows, b.cols), options);
  check_against_reference(r, grad, b.mask, expected, std::is_same_v<T, float> ? 2e-5 : 1e-12);
  CHECK(std::isfinite(r.loss));

  SUBCASE("same bits on a second call") {
    std::vector<T> again(b.mask.size(), T(5));
    const auto r2 =
        rlcore::grpo_objective(layout, view(lp), view(old), view(ref), view(adv),
                               rlcore::make_matrix_view(again.data(), b.rows, b.cols), options);
    CHECK(std::memcmp(&r.loss, &r2.loss, sizeof(double)) == 0);
    CHECK(std::memcmp(grad.data(), again.data(), grad.size() * sizeof(T)) == 0);
  }
}

TEST_CASE(
    "chunked GRPO loss: packed rows and strided (column-major) views give the padded result") {
  const batch b = make_batch(7, 37, 23);
  const auto expected = reference(b, 0.2, 0.04);
  // packed: the first row_length slots of every row (the mask is 0 beyond them)
  std::vector<std::int64_t> offsets{0};
  std::vector<double> mask, lp, old, ref, adv;
  std::vector<std::size_t> source;
  for (index_t i = 0; i < b.rows; ++i) {
    const index_t length = (i * 7) % (b.cols + 1);
    for (index_t t = 0; t < length; ++t) {
      const auto k = static_cast<std::size_t>(i * b.cols + t);
      source.push_back(k);
      mask.push_back(b.mask[k]);
      lp.push_back(b.lp[k]);
      old.push_back(b.old[k]);
      ref.push_back(b.ref[k]);
      adv.push_back(b.adv[k]);
    }
    offsets.push_back(static_cast<std::int64_t>(lp.size()));
  }
  std::vector<double> grad(lp.size(), -7);
  const auto packed = rlcore::packed(offsets, mask);
  const auto r = rlcore::grpo_objective(packed, lp, old, ref, adv, grad);
  CHECK(r.loss == doctest::Approx(expected.loss).epsilon(1e-12));
  CHECK(r.metrics.valid_tokens == expected.valid);
  for (std::size_t f = 0; f < grad.size(); ++f) {
    CHECK(grad[f] == doctest::Approx(expected.grad[source[f]]).epsilon(1e-12).scale(1e-15));
  }

  // column-major copies: col_stride = rows (the token-by-token gather / scatter)
  auto transpose = [&](const std::vector<double>& x) {
    std::vector<double> y(x.size());
    for (index_t i = 0; i < b.rows; ++i) {
      for (index_t t = 0; t < b.cols; ++t) {
        y[static_cast<std::size_t>(t * b.rows + i)] = x[static_cast<std::size_t>(i * b.cols + t)];
      }
    }
    return y;
  };
  const auto mask_c = transpose(b.mask), lp_c = transpose(b.lp), old_c = transpose(b.old),
             ref_c = transpose(b.ref), adv_c = transpose(b.adv);
  std::vector<double> grad_c(b.mask.size(), -7);
  auto column_major = [&](auto* data) {
    return rlcore::matrix_view<std::remove_pointer_t<decltype(data)>>{data, b.rows, b.cols, 1,
                                                                      b.rows};
  };
  const auto layout_c = rlcore::padded(column_major(mask_c.data()));
  const auto rc = rlcore::grpo_objective(layout_c, column_major(lp_c.data()),
                                         column_major(old_c.data()), column_major(ref_c.data()),
                                         column_major(adv_c.data()), column_major(grad_c.data()));
  CHECK(rc.loss == doctest::Approx(expected.loss).epsilon(1e-12));
  for (index_t i = 0; i < b.rows; ++i) {
    for (index_t t = 0; t < b.cols; ++t) {
      const auto k = static_cast<std::size_t>(i * b.cols + t);
      const double g = grad_c[static_cast<std::size_t>(t * b.rows + i)];
      if (b.mask[k] == 0) {
        CHECK(g == 0.0);
      } else {
        CHECK(g == doctest::Approx(expected.grad[k]).epsilon(1e-12).scale(1e-15));
      }
    }
  }
}

TEST_CASE("chunked GRPO loss without a mask and with extreme finite inputs stays finite") {
  // 2 rows of 40: every token valid; log-ratios of +-1e30 hit the clamp (20) before any exp.
  const index_t rows = 2, cols = 40;
  std::vector<float> lp(rows * cols), old(rows * cols), ref(rows * cols), adv(rows * cols),
      grad(rows * cols);
  for (std::size_t k = 0; k < lp.size(); ++k) {
    lp[k] = (k % 2 == 0) ? 1e30f : -1e30f;
    old[k] = -lp[k];
    ref[k] = (k % 3 == 0) ? 3e38f : -3e38f;
    adv[k] = (k % 5 == 0) ? -1e3f : 1e-30f;
  }
  auto view = [&](auto& x) { return rlcore::make_matrix_view(x.data(), rows, cols); };
  const auto r = rlcore::grpo_objective(rlcore::padded_unmasked(rows, cols), view(lp), view(old),
                                        view(ref), view(adv), view(grad));
  CHECK(std::isfinite(r.loss));
  CHECK(r.metrics.valid_tokens == double(rows * cols));
  for (float g : grad) {
    CHECK(std::isfinite(g));
  }
}
