// The host execution context's fast paths for the fused objective: runtime instruction-set
// dispatch of the chunked token kernel, deterministic multi-threading over a fixed partition of
// rows into blocks, and the whole-row valid counts of the pre-pass. Every instruction set and
// thread count must give the same bits (GCC: the kernels are compiled without FMA contraction) and
// agree with a reference written from the formulas (ALGORITHMS.md: clipped surrogate + beta * k3,
// seq-mean-token-mean).
#include <rlcore/objective/grpo.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using rlcore::index_t;

// Packed rows of lengths 0 .. 1200 (several blocks of the chunked reduction: > 2^16 slots in
// all), ~12% of the slots masked, masked slots holding NaN / inf.
struct ragged_batch {
  std::vector<std::int64_t> offsets{0};
  std::vector<unsigned char> mask;
  std::vector<double> lp, old, ref, adv;
};

ragged_batch make_ragged_batch(index_t rows, unsigned seed) {
  ragged_batch b;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  for (index_t i = 0; i < rows; ++i) {
    const index_t length = (i * 389) % 1201;
    for (index_t t = 0; t < length; ++t) {
      const bool valid = u(rng) < 0.88;
      b.mask.push_back(valid ? 1 : 0);
      const double lp = -4 * u(rng);
      b.lp.push_back(valid ? lp : std::numeric_limits<double>::quiet_NaN());
      b.old.push_back(valid ? lp + 0.8 * (u(rng) - 0.5) : std::numeric_limits<double>::infinity());
      b.ref.push_back(lp + 1.6 * (u(rng) - 0.5));
      b.adv.push_back(4 * u(rng) - 2);
    }
    b.offsets.push_back(static_cast<std::int64_t>(b.lp.size()));
  }
  return b;
}

// GRPO loss from the formulas, in double: per valid token r = exp(lp - old),
// l = max(-A r, -A clip(r, 0.8, 1.2)) + 0.04 * (e^-x + x - 1), x = lp - ref, weight 1 / (n_i N).
double reference_loss(const ragged_batch& b) {
  const auto rows = static_cast<index_t>(b.offsets.size()) - 1;
  double loss = 0;
  for (index_t i = 0; i < rows; ++i) {
    const auto begin = static_cast<std::size_t>(b.offsets[static_cast<std::size_t>(i)]);
    const auto end = static_cast<std::size_t>(b.offsets[static_cast<std::size_t>(i) + 1]);
    double n_i = 0;
    for (std::size_t k = begin; k < end; ++k) {
      n_i += b.mask[k];
    }
    for (std::size_t k = begin; k < end; ++k) {
      if (b.mask[k] == 0) {
        continue;
      }
      const double ratio = std::exp(b.lp[k] - b.old[k]);
      const double a = b.adv[k];
      const double surrogate = std::max(-a * ratio, -a * std::min(std::max(ratio, 0.8), 1.2));
      const double x = b.lp[k] - b.ref[k];
      loss += (surrogate + 0.04 * (std::exp(-x) + x - 1)) / (n_i * double(rows));
    }
  }
  return loss;
}

template <class T>
struct run_result {
  rlcore::objective_result result;
  std::vector<T> grad;
};

template <class T>
run_result<T> run(const ragged_batch& b, const rlcore::host_context& ctx) {
  const std::vector<T> lp(b.lp.begin(), b.lp.end()), old(b.old.begin(), b.old.end()),
      ref(b.ref.begin(), b.ref.end()), adv(b.adv.begin(), b.adv.end());
  run_result<T> r;
  r.grad.assign(lp.size(), T(-7));
  r.result = rlcore::grpo_objective(rlcore::packed(b.offsets, b.mask), lp, old, ref, adv, r.grad,
                                    rlcore::grpo_options{}, ctx);
  return r;
}

template <class T>
bool same_bits(const run_result<T>& a, const run_result<T>& b) {
  return std::memcmp(&a.result, &b.result, sizeof(rlcore::objective_result)) == 0
         && std::memcmp(a.grad.data(), b.grad.data(), a.grad.size() * sizeof(T)) == 0;
}

} // namespace

TEST_CASE_TEMPLATE("host context: every thread count gives the same bits, equal to the formulas", T,
                   float, double) {
  const ragged_batch b = make_ragged_batch(260, 5); // ~156k slots: 3 blocks
  REQUIRE(b.lp.size() > 2 * std::size_t(rlcore::host_context::chunked_block_slots));
  const run_result<T> one = run<T>(b, rlcore::host_context{});
  CHECK(one.result.loss
        == doctest::Approx(reference_loss(b)).epsilon(std::is_same_v<T, float> ? 2e-5 : 1e-12));
  for (const int threads : {2, 3, 7, 0}) {
    rlcore::host_context ctx;
    ctx.threads = threads;
    INFO("threads = ", threads);
    CHECK(same_bits(one, run<T>(b, ctx)));
  }
  for (std::size_t k = 0; k < b.mask.size(); ++k) {
    if (b.mask[k] == 0) {
      REQUIRE(one.grad[k] == T(0)); // masked NaN / inf slots: exactly 0
    }
  }
}

TEST_CASE_TEMPLATE("host context: every supported instruction set gives the same result", T, float,
                   double) {
  const ragged_batch b = make_ragged_batch(130, 9);
  rlcore::host_context baseline;
  baseline.max_isa = rlcore::host_isa::baseline;
  const run_result<T> expected = run<T>(b, baseline);
  MESSAGE("this CPU's best host_isa: ", static_cast<int>(rlcore::supported_host_isa()));
  for (const rlcore::host_isa isa : {rlcore::host_isa::avx2, rlcore::host_isa::avx512}) {
    if (static_cast<int>(isa) > static_cast<int>(rlcore::supported_host_isa())) {
      continue; // not available here: it would run the best supported one
    }
    rlcore::host_context ctx;
    ctx.max_isa = isa;
    ctx.threads = 2;
    INFO("isa = ", static_cast<int>(isa));
    const run_result<T> r = run<T>(b, ctx);
#if defined(__GNUC__) && !defined(__clang__)
    // GCC compiles the kernels without FMA contraction: the same bits on every instruction set
    CHECK(same_bits(expected, r));
#else
    // Clang contracts a * b + c within an expression where FMA exists: rounding-level differences
    const double tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-13;
    CHECK(r.result.loss == doctest::Approx(expected.result.loss).epsilon(tolerance));
    for (std::size_t k = 0; k < r.grad.size(); ++k) {
      CHECK(double(r.grad[k])
            == doctest::Approx(double(expected.grad[k])).epsilon(tolerance).scale(1e-9));
    }
#endif
  }
}

TEST_CASE_TEMPLATE("host context: contract_fma is within rounding of the exact kernels, and the "
                   "same bits for every thread count",
                   T, float, double) {
  const ragged_batch b = make_ragged_batch(260, 11); // 3 blocks
  rlcore::host_context exact_ctx;
  exact_ctx.max_isa = rlcore::host_isa::baseline;
  const run_result<T> exact = run<T>(b, exact_ctx);
  rlcore::host_context fma_ctx;
  fma_ctx.contract_fma = true;
  const run_result<T> fma = run<T>(b, fma_ctx);
  // a * b + c in one rounding instead of two: rounding-level differences (measured on AVX-512:
  // the largest gradient difference 4.4e-8 of the largest gradient in float, 1e-16 in double)
  const bool is_float = std::is_same_v<T, float>;
  const double tolerance = is_float ? 2e-6 : 1e-13;
  CHECK(fma.result.loss == doctest::Approx(exact.result.loss).epsilon(tolerance));
  CHECK(fma.result.loss
        == doctest::Approx(reference_loss(b)).epsilon(is_float ? 2e-5 : 1e-12)); // the formulas
  const rlcore::objective_metrics& m = fma.result.metrics;
  const rlcore::objective_metrics& e = exact.result.metrics;
  CHECK(m.valid_tokens == e.valid_tokens);
  CHECK(m.approx_kl == doctest::Approx(e.approx_kl).epsilon(tolerance));
  CHECK(m.kl_penalty_mean == doctest::Approx(e.kl_penalty_mean).epsilon(10 * tolerance));
  CHECK(m.advantage_std == doctest::Approx(e.advantage_std).epsilon(tolerance));
  // a ratio within rounding of a clip bound may land on the other side: a token or two
  CHECK(std::fabs(m.clip_fraction - e.clip_fraction) * m.valid_tokens <= 2);
  double largest = 0;
  double worst = 0;
  for (std::size_t k = 0; k < fma.grad.size(); ++k) {
    largest = std::max(largest, std::fabs(double(exact.grad[k])));
    worst = std::max(worst, std::fabs(double(fma.grad[k]) - double(exact.grad[k])));
    if (b.mask[k] == 0) {
      REQUIRE(fma.grad[k] == T(0)); // masked NaN / inf slots: exactly 0
    }
  }
  MESSAGE("contract_fma: loss ", fma.result.loss, " vs ", exact.result.loss,
          "; largest gradient difference ", worst, " of ", largest);
  CHECK(worst <= tolerance * largest);
  for (const int threads : {2, 7, 0}) {
    rlcore::host_context ctx = fma_ctx;
    ctx.threads = threads;
    INFO("threads = ", threads);
    CHECK(same_bits(fma, run<T>(b, ctx)));
  }
  // the baseline kernel has no FMA: contract_fma changes nothing there
  rlcore::host_context baseline_fma = exact_ctx;
  baseline_fma.contract_fma = true;
  CHECK(same_bits(exact, run<T>(b, baseline_fma)));
}

TEST_CASE("host context: a negative thread count is an invalid_argument naming `threads`") {
  const ragged_batch b = make_ragged_batch(3, 1);
  rlcore::host_context ctx;
  ctx.threads = -2;
  try {
    static_cast<void>(run<double>(b, ctx));
    FAIL("expected rlcore::invalid_argument");
  } catch (const rlcore::invalid_argument& e) {
    CHECK(e.argument() == "threads");
    CHECK(std::string(e.what())
          == "rlcore::execution_context<host_space>: argument 'threads': expected a thread count "
             ">= 1, or 0 for every hardware thread, got -2");
  }
}

TEST_CASE("host row valid counts: contiguous masks of any type, strided masks, no mask") {
  const rlcore::host_context ctx;
  // 3 x 5 float mask: NaN and -0.0 follow valid()'s != 0 rule (NaN valid, -0.0 not)
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> mask{1, 0, nan, -0.0f, 2, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1};
  std::vector<double> counts(3, -1);
  rlcore::detail::row_valid_counts(rlcore::padded(rlcore::make_matrix_view(mask.data(), 3, 5)),
                                   counts.data(), ctx);
  CHECK(counts == std::vector<double>{3, 0, 5});
  // the same mask column-major (col_stride 3): token by token
  std::vector<float> mask_c(15);
  for (index_t i = 0; i < 3; ++i) {
    for (index_t t = 0; t < 5; ++t) {
      mask_c[static_cast<std::size_t>(t * 3 + i)] = mask[static_cast<std::size_t>(i * 5 + t)];
    }
  }
  rlcore::detail::row_valid_counts(
      rlcore::padded(rlcore::matrix_view<const float>{mask_c.data(), 3, 5, 1, 3}), counts.data(),
      ctx);
  CHECK(counts == std::vector<double>{3, 0, 5});
  // packed with a bool mask; rows of 2, 0 and 3 slots
  const std::vector<int> offsets{0, 2, 2, 5};
  const bool flags[5] = {true, false, true, true, false};
  rlcore::detail::row_valid_counts(
      rlcore::packed(offsets, rlcore::vector_view<const bool>{flags, 5, 1}), counts.data(), ctx);
  CHECK(counts == std::vector<double>{1, 0, 2});
  // no mask: the row lengths
  rlcore::detail::row_valid_counts(rlcore::padded_unmasked(3, 4), counts.data(), ctx);
  CHECK(counts == std::vector<double>{4, 4, 4});
  CHECK(rlcore::detail::count_valid_tokens(
            rlcore::padded(rlcore::make_matrix_view(mask.data(), 3, 5)), ctx)
        == 8.0);
}

TEST_CASE("host chunked path with mixed element types: inputs converted, outputs converted back") {
  // log_probs in double (T = double), the other inputs and the gradient in float: the float rows
  // are gathered and converted, the double gradient scattered back to float
  const ragged_batch b = make_ragged_batch(40, 3);
  const std::vector<float> old(b.old.begin(), b.old.end()), ref(b.ref.begin(), b.ref.end()),
      adv(b.adv.begin(), b.adv.end());
  const std::vector<double> old_d(old.begin(), old.end()), ref_d(ref.begin(), ref.end()),
      adv_d(adv.begin(), adv.end());
  std::vector<float> grad(b.lp.size(), -7.0f);
  std::vector<double> grad_d(b.lp.size(), -7.0);
  const auto layout = rlcore::packed(b.offsets, b.mask);
  const auto mixed = rlcore::grpo_objective(layout, b.lp, old, ref, adv, grad);
  const auto uniform = rlcore::grpo_objective(layout, b.lp, old_d, ref_d, adv_d, grad_d);
  CHECK(mixed.loss == uniform.loss); // the same double computation on the same values
  for (std::size_t k = 0; k < grad.size(); ++k) {
    REQUIRE(grad[k] == static_cast<float>(grad_d[k]));
  }
}

TEST_CASE_TEMPLATE("host chunked path: rows read in place and rows gathered token by token give "
                   "the same bits",
                   T, float, double) {
  // The ragged batch as padded rows (row-major: every view contiguous along its rows, read in
  // place) and the same values column-major (col_stride = rows: every chunk gathered token by
  // token); with the mask, and without a mask (every slot valid, padding replaced by finite
  // values).
  const ragged_batch b = make_ragged_batch(48, 11);
  const index_t rows = 48;
  index_t cols = 0;
  for (index_t i = 0; i < rows; ++i) {
    cols = std::max<index_t>(cols, b.offsets[std::size_t(i) + 1] - b.offsets[std::size_t(i)]);
  }
  const auto slots = static_cast<std::size_t>(rows * cols);
  std::vector<unsigned char> mask(slots, 0), mask_c(slots, 0);
  std::vector<T> lp(slots, T(-1)), old(slots, T(-1.5)), ref(slots, T(-0.5)), adv(slots, T(0.25));
  std::vector<T> lp_c(slots), old_c(slots), ref_c(slots), adv_c(slots);
  for (index_t i = 0; i < rows; ++i) {
    const auto begin = static_cast<std::size_t>(b.offsets[std::size_t(i)]);
    const auto length = static_cast<index_t>(b.offsets[std::size_t(i) + 1]) - index_t(begin);
    for (index_t t = 0; t < length; ++t) {
      const std::size_t at = std::size_t(i * cols + t);
      const std::size_t k = begin + std::size_t(t);
      mask[at] = b.mask[k];
      lp[at] = T(b.lp[k]);
      old[at] = T(b.old[k]);
      ref[at] = T(b.ref[k]);
      adv[at] = T(b.adv[k]);
    }
  }
  for (index_t i = 0; i < rows; ++i) {
    for (index_t t = 0; t < cols; ++t) {
      const std::size_t from = std::size_t(i * cols + t);
      const std::size_t to = std::size_t(t * rows + i);
      mask_c[to] = mask[from];
      lp_c[to] = lp[from];
      old_c[to] = old[from];
      ref_c[to] = ref[from];
      adv_c[to] = adv[from];
    }
  }
  const auto row_major = [&](auto& x) { return rlcore::make_matrix_view(x.data(), rows, cols); };
  const auto col_major = [&](auto& x) {
    using E = std::remove_reference_t<decltype(*x.data())>;
    return rlcore::matrix_view<E>{x.data(), rows, cols, 1, rows};
  };
  // grads start at -7: every slot must be written
  std::vector<T> grad(slots, T(-7)), grad_c(slots, T(-7));
  const auto in_place =
      rlcore::grpo_objective(rlcore::padded(row_major(mask)), row_major(lp), row_major(old),
                             row_major(ref), row_major(adv), row_major(grad));
  const auto gathered =
      rlcore::grpo_objective(rlcore::padded(col_major(mask_c)), col_major(lp_c), col_major(old_c),
                             col_major(ref_c), col_major(adv_c), col_major(grad_c));
  CHECK(std::memcmp(&in_place, &gathered, sizeof(rlcore::objective_result)) == 0);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t t = 0; t < cols; ++t) {
      REQUIRE(grad[std::size_t(i * cols + t)] == grad_c[std::size_t(t * rows + i)]);
    }
  }
  CHECK(in_place.loss
        == doctest::Approx(reference_loss(b)).epsilon(std::is_same_v<T, float> ? 2e-5 : 1e-12));

  // no mask: the masked slots' NaN / inf replaced by the finite padding values
  for (std::size_t k = 0; k < slots; ++k) {
    if (mask[k] == 0) {
      lp[k] = T(-1);
      old[k] = T(-1.5);
    }
  }
  for (index_t i = 0; i < rows; ++i) {
    for (index_t t = 0; t < cols; ++t) {
      lp_c[std::size_t(t * rows + i)] = lp[std::size_t(i * cols + t)];
      old_c[std::size_t(t * rows + i)] = old[std::size_t(i * cols + t)];
    }
  }
  const auto unmasked = rlcore::padded_unmasked(rows, cols);
  const auto in_place_unmasked = rlcore::grpo_objective(
      unmasked, row_major(lp), row_major(old), row_major(ref), row_major(adv), row_major(grad));
  const auto gathered_unmasked =
      rlcore::grpo_objective(unmasked, col_major(lp_c), col_major(old_c), col_major(ref_c),
                             col_major(adv_c), col_major(grad_c));
  CHECK(in_place_unmasked.metrics.valid_tokens == double(slots));
  CHECK(std::memcmp(&in_place_unmasked, &gathered_unmasked, sizeof(rlcore::objective_result)) == 0);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t t = 0; t < cols; ++t) {
      REQUIRE(grad[std::size_t(i * cols + t)] == grad_c[std::size_t(t * rows + i)]);
    }
  }
}

namespace {

// A token functor with the host chunked and row forms hidden: reduce_tokens runs it token by
// token through operator(), as every backend without the chunked form does.
template <class F>
struct token_by_token {
  F f;
  rlcore::detail::policy_token_sums operator()(index_t i, index_t t) const { return f(i, t); }
};

} // namespace

TEST_CASE_TEMPLATE("host chunked path: the clipped surrogate with general options, CISPO, "
                   "REINFORCE and SAPO give the token-by-token path's gradients, bitwise, and its "
                   "sums",
                   T, float, double) {
  const ragged_batch b = make_ragged_batch(60, 13);
  const std::vector<T> lp(b.lp.begin(), b.lp.end()), old(b.old.begin(), b.old.end()),
      ref(b.ref.begin(), b.ref.end()), adv(b.adv.begin(), b.adv.end());
  const auto layout = rlcore::packed(b.offsets, b.mask);
  const rlcore::host_context ctx;
  struct form {
    const char* name;
    rlcore::policy_loss loss;
    double dual_clip;
    rlcore::kl_estimator kl;
    bool kl_output_clamp;
    int variant;
  };
  const form forms[] = {
      {"clipped, dual clip 3, k2 with output clamp", rlcore::policy_loss::clipped, 3.0,
       rlcore::kl_estimator::k2, true, 0},
      {"clipped, GRPO defaults", rlcore::policy_loss::clipped, 0.0, rlcore::kl_estimator::k3, false,
       1},
      {"CISPO, k3", rlcore::policy_loss::cispo, 0.0, rlcore::kl_estimator::k3, false, 0},
      {"CISPO, k3_importance", rlcore::policy_loss::cispo, 0.0, rlcore::kl_estimator::k3_importance,
       false, 0},
      {"REINFORCE, k1", rlcore::policy_loss::reinforce, 0.0, rlcore::kl_estimator::k1, false, 0},
      {"SAPO, k3", rlcore::policy_loss::sapo, 0.0, rlcore::kl_estimator::k3, false, 2},
      {"SAPO, k2 with output clamp", rlcore::policy_loss::sapo, 0.0, rlcore::kl_estimator::k2, true,
       2},
  };
  for (const form& f : forms) {
    INFO(std::string(f.name));
    rlcore::policy_options o;
    o.loss = f.loss;
    o.dual_clip = f.dual_clip;
    o.eps_high = 0.28;
    o.kl = f.kl;
    o.kl_beta = 0.05;
    o.kl_output_clamp = f.kl_output_clamp;
    o.kl_output_min = -0.01;
    o.kl_output_max = 0.02;
    rlcore::detail::policy_params<T> p = rlcore::detail::make_policy_params<T>(o);
    p.weights = rlcore::aggregation_weights{1.0 / 4096, false};
    p.row_counts_only = true;
    std::vector<T> grad_chunked(lp.size(), T(-7)), grad_tokens(lp.size(), T(-7));
    const rlcore::detail::policy_views views{
        layout.bind("test", "lp", lp),       layout.bind("test", "old", old),
        layout.bind("test", "adv", adv),     layout.bind("test", "ref", ref),
        rlcore::detail::absent_token_view{}, rlcore::detail::absent_token_view{}};
    using pass = rlcore::detail::policy_token_pass<T, decltype(layout), decltype(views),
                                                   decltype(layout.bind("", "", grad_chunked)),
                                                   rlcore::detail::absent_token_view>;
    const pass chunked{layout, views, layout.bind("test", "grad", grad_chunked), {}, p, nullptr};
    const pass tokens{layout, views, layout.bind("test", "grad", grad_tokens), {}, p, nullptr};
    REQUIRE(chunked.host_chunk_enabled());
    CHECK(chunked.host_variant() == f.variant);
    const auto s_chunked = ctx.reduce_tokens(layout, rlcore::detail::policy_token_sums{}, chunked);
    const auto s_tokens = ctx.reduce_tokens(layout, rlcore::detail::policy_token_sums{},
                                            token_by_token<pass>{tokens});
    for (std::size_t k = 0; k < lp.size(); ++k) {
      REQUIRE(grad_chunked[k] == grad_tokens[k]);
    }
    // sums in another order (k1 and the advantages have both signs: some cancellation)
    const double tolerance = std::is_same_v<T, float> ? 2e-6 : 1e-11;
    CHECK(s_chunked.valid == s_tokens.valid);
    CHECK(s_chunked.clipped_low == s_tokens.clipped_low);
    CHECK(s_chunked.clipped_high == s_tokens.clipped_high);
    CHECK(s_chunked.dual_clipped == s_tokens.dual_clipped);
    CHECK(s_chunked.policy_loss == doctest::Approx(s_tokens.policy_loss).epsilon(tolerance));
    CHECK(s_chunked.kl_loss == doctest::Approx(s_tokens.kl_loss).epsilon(tolerance));
    CHECK(s_chunked.kl_value == doctest::Approx(s_tokens.kl_value).epsilon(tolerance));
    CHECK(s_chunked.neg_delta == doctest::Approx(s_tokens.neg_delta).epsilon(tolerance));
    CHECK(s_chunked.advantage == doctest::Approx(s_tokens.advantage).epsilon(tolerance));
    CHECK(s_chunked.advantage_sq == doctest::Approx(s_tokens.advantage_sq).epsilon(tolerance));
    CHECK(s_chunked.importance_weight == s_tokens.importance_weight);
    CHECK(s_chunked.entropy_kept == s_tokens.entropy_kept);
    CHECK(s_tokens.valid > 30000);
    if (f.loss != rlcore::policy_loss::reinforce && f.loss != rlcore::policy_loss::sapo) {
      CHECK(s_tokens.clipped_high > 0); // the clip / truncation is exercised
    }
  }
}

TEST_CASE_TEMPLATE(
    "host chunked path: the row counts taken in the token pass equal the pre-pass's, "
    "and give the same bits",
    T, float, double) {
  // packed rows of lengths 0 .. 1200 (partial chunks, rows shorter than a chunk, empty rows) plus
  // three fully masked rows of 5, 40 and 700 slots: weight 0 there
  ragged_batch b = make_ragged_batch(50, 17);
  for (const index_t length : {5, 40, 700}) {
    for (index_t t = 0; t < length; ++t) {
      b.mask.push_back(0);
      b.lp.push_back(-1.0);
      b.old.push_back(-1.0);
      b.ref.push_back(-1.0);
      b.adv.push_back(1.0);
    }
    b.offsets.push_back(static_cast<std::int64_t>(b.lp.size()));
  }
  const std::vector<T> lp(b.lp.begin(), b.lp.end()), old(b.old.begin(), b.old.end()),
      ref(b.ref.begin(), b.ref.end()), adv(b.adv.begin(), b.adv.end());
  const auto layout = rlcore::packed(b.offsets, b.mask);
  const index_t rows = layout.rows();
  const rlcore::host_context ctx;
  // the GRPO defaults (clip 0.2, 0.04 * k3, seq-mean-token-mean: weight 1 / (n_i N))
  rlcore::detail::policy_params<T> p =
      rlcore::detail::make_policy_params<T>(rlcore::grpo_options{}.as_policy_options());
  p.weights = rlcore::aggregation_weights{1.0 / double(rows), true};
  p.row_stats_needed = true;
  p.row_counts_only = true;
  const rlcore::detail::policy_views views{
      layout.bind("test", "lp", lp),       layout.bind("test", "old", old),
      layout.bind("test", "adv", adv),     layout.bind("test", "ref", ref),
      rlcore::detail::absent_token_view{}, rlcore::detail::absent_token_view{}};
  std::vector<T> grad_pre_pass(lp.size(), T(-7)), grad_in_pass(lp.size(), T(-7));
  using pass = rlcore::detail::policy_token_pass<T, decltype(layout), decltype(views),
                                                 decltype(layout.bind("", "", grad_pre_pass)),
                                                 rlcore::detail::absent_token_view>;
  // n_i from the count-only pre-pass
  std::vector<rlcore::detail::policy_row_stats> pre_pass(static_cast<std::size_t>(rows));
  ctx.reduce_rows(
      layout, pre_pass.data(),
      rlcore::detail::policy_row_pass<T, decltype(layout), decltype(views)>{layout, views, p});
  const pass with_pre_pass{layout, views, layout.bind("test", "grad", grad_pre_pass),
                           {},     p,     pre_pass.data()};
  // n_i counted by the token pass, row by row (stale values first: they must be overwritten)
  std::vector<rlcore::detail::policy_row_stats> in_pass(static_cast<std::size_t>(rows));
  for (rlcore::detail::policy_row_stats& s : in_pass) {
    s.valid = -5;
  }
  rlcore::detail::policy_params<T> p_in_pass = p;
  p_in_pass.host_row_counts = in_pass.data();
  const pass counting{layout, views,     layout.bind("test", "grad", grad_in_pass),
                      {},     p_in_pass, in_pass.data()};
  REQUIRE(counting.host_chunk_enabled());
  const auto sums_pre_pass =
      ctx.reduce_tokens(layout, rlcore::detail::policy_token_sums{}, with_pre_pass);
  const auto sums_in_pass =
      ctx.reduce_tokens(layout, rlcore::detail::policy_token_sums{}, counting);
  double counted = 0;
  for (index_t i = 0; i < rows; ++i) {
    const auto begin = static_cast<std::size_t>(b.offsets[std::size_t(i)]);
    const auto end = static_cast<std::size_t>(b.offsets[std::size_t(i) + 1]);
    double n_i = 0;
    for (std::size_t k = begin; k < end; ++k) {
      n_i += b.mask[k] != 0 ? 1 : 0;
    }
    REQUIRE(pre_pass[std::size_t(i)].valid == n_i);
    REQUIRE(in_pass[std::size_t(i)].valid == n_i);
    counted += n_i;
  }
  CHECK(in_pass[std::size_t(rows) - 1].valid == 0); // the fully masked rows
  CHECK(sums_in_pass.valid == counted);
  CHECK(std::memcmp(&sums_pre_pass, &sums_in_pass, sizeof(sums_in_pass)) == 0);
  CHECK(std::memcmp(grad_pre_pass.data(), grad_in_pass.data(), lp.size() * sizeof(T)) == 0);
  // and the public call (which counts in the token pass) against the formulas
  std::vector<T> grad(lp.size());
  const auto result = rlcore::grpo_objective(layout, lp, old, ref, adv, grad);
  CHECK(result.loss
        == doctest::Approx(sums_in_pass.policy_loss + sums_in_pass.kl_loss)
               .epsilon(std::is_same_v<T, float> ? 1e-6 : 1e-14));
  CHECK(std::memcmp(grad.data(), grad_in_pass.data(), lp.size() * sizeof(T)) == 0);
}
