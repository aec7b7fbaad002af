// Logits kernels: token log-probs and entropy from bf16 / fp16 / fp32 logits against a double
// CPU reference written here from the definitions (lp = z_id/tau - logsumexp(z/tau),
// H = -sum p log p), exact vocabulary tails (32001, 129920, 151936, 152064), misaligned rows,
// masked rows never read, bad ids reported, the accuracy of the fast exp2 path measured, the NaN /
// inf policy (error by default, propagate on request) and huge finite logits (exact fallback); the
// fused GRPO-from-logits forward + backward against the CPU grpo_objective chained with
// d lp / dz = (onehot - p) / tau, through the cluster kernel (every cluster size 1 to 8, vocabulary
// tails, rows at any offset from a 16-byte boundary against the two-pass kernel, in place, more
// rows than resident clusters, exact-fallback rows among many rows) and the two-pass kernel,
// deterministic.
#include "cuda_test_util.cuh"

#include <rlcore/backend/cuda/logits.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits>
#include <utility>
#include <vector>

using rlcore::device_space;
using rlcore::index_t;
using namespace rlcore_test;

namespace {

rlcore::device_context ctx{};

template <class T>
T to_logit(float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(x);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(x);
  } else {
    return x;
  }
}
template <class T>
double from_logit(T x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return double(__bfloat162float(x));
  } else if constexpr (std::is_same_v<T, __half>) {
    return double(__half2float(x));
  } else {
    return double(x);
  }
}

/// Double reference of one row: log-softmax values and entropy at temperature tau.
struct row_reference {
  std::vector<double> log_p;
  double entropy = 0;
};
template <class T>
row_reference reference_row(const T* row, index_t vocab, double tau) {
  double m = -std::numeric_limits<double>::infinity();
  for (index_t j = 0; j < vocab; ++j) {
    m = std::max(m, from_logit(row[j]) / tau);
  }
  double s = 0;
  for (index_t j = 0; j < vocab; ++j) {
    s += std::exp(from_logit(row[j]) / tau - m);
  }
  const double lse = m + std::log(s);
  row_reference out;
  out.log_p.resize(vocab);
  for (index_t j = 0; j < vocab; ++j) {
    out.log_p[j] = from_logit(row[j]) / tau - lse;
    if (std::isfinite(out.log_p[j])) { // a -inf logit has p = 0 and adds nothing
      out.entropy -= std::exp(out.log_p[j]) * out.log_p[j];
    }
  }
  return out;
}

template <class T>
std::vector<T> random_logits(std::size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<T> out(n);
  for (auto& x : out) {
    x = to_logit<T>(dist(rng));
  }
  return out;
}

template <class T>
void check_token_log_probs(index_t vocab, index_t pad, double tau) {
  INFO("vocab ", vocab, " pad ", pad, " tau ", tau, " bytes ", sizeof(T));
  const index_t rows = 5;
  const index_t stride = vocab + pad; // pad = 0 and odd vocab: rows are not 16-byte aligned
  const index_t offset = 1;           // the first row starts one element past an aligned address
  auto host = random_logits<T>(offset + rows * stride, vocab * 7 + pad);
  auto in_vocab = [&](index_t id) {
    return std::int64_t{std::max<index_t>(0, std::min(id, vocab - 1))};
  };
  const std::vector<std::int64_t> ids{0, vocab - 1, vocab / 2, in_vocab(3), in_vocab(vocab - 2)};
  const std::vector<std::uint8_t> mask{1, 1, 0, 1, 1};
  // Row 2 is masked: poison it (never read).
  for (index_t j = 0; j < vocab; ++j) {
    host[offset + 2 * stride + j] = to_logit<T>(std::numeric_limits<float>::quiet_NaN());
  }
  thrust::device_vector<T> d(host.begin(), host.end());
  const auto dids = to_device(ids);
  const auto dmask = to_device(mask);
  thrust::device_vector<float> lp(rows, -99.0f);
  thrust::device_vector<float> h(rows, -99.0f);
  const rlcore::matrix_view<const T, device_space> logits{
      thrust::raw_pointer_cast(d.data()) + offset, rows, vocab, stride, 1};
  rlcore::cuda::token_log_probs(
      logits, thrust::raw_pointer_cast(dids.data()), thrust::raw_pointer_cast(dmask.data()),
      thrust::raw_pointer_cast(lp.data()), thrust::raw_pointer_cast(h.data()), tau, ctx);
  const auto lp_h = to_host(lp);
  const auto h_h = to_host(h);
  for (index_t r = 0; r < rows; ++r) {
    if (mask[r] == 0) {
      CHECK(lp_h[r] == 0.0f);
      CHECK(h_h[r] == 0.0f);
      continue;
    }
    const auto ref = reference_row(host.data() + offset + r * stride, vocab, tau);
    // fp32 accumulation over ~1e5 terms: ~1e-6 relative on logsumexp (|lp| ~ 10).
    CHECK(std::abs(lp_h[r] - ref.log_p[ids[r]])
          <= 2e-5 * std::max(1.0, std::abs(ref.log_p[ids[r]])));
    CHECK(std::abs(h_h[r] - ref.entropy) <= 2e-5 * std::max(1.0, ref.entropy));
  }
}

} // namespace

TEST_CASE_TEMPLATE("token log-probs and entropy: exact for every vocabulary tail", T, __nv_bfloat16,
                   __half, float) {
  for (index_t vocab : {index_t{32001}, index_t{129920}, index_t{151936}, index_t{152064}}) {
    check_token_log_probs<T>(vocab, 0, 1.0);
  }
  check_token_log_probs<T>(1, 0, 1.0);      // one-token vocabulary: lp = 0, H = 0
  check_token_log_probs<T>(7, 0, 1.0);      // shorter than one vector
  check_token_log_probs<T>(32001, 15, 0.7); // padded rows, temperature
}

TEST_CASE("token log-probs: ids outside [0, V) are reported, never read") {
  const index_t vocab = 1000;
  auto host = random_logits<float>(3 * vocab, 5);
  thrust::device_vector<float> d(host.begin(), host.end());
  const auto ids = to_device(std::vector<int>{3, 1000, -1});
  thrust::device_vector<float> lp(3);
  const rlcore::matrix_view<const float, device_space> logits{thrust::raw_pointer_cast(d.data()), 3,
                                                              vocab, vocab, 1};
  check_invalid(
      [&] {
        rlcore::cuda::token_log_probs<float, int>(logits, thrust::raw_pointer_cast(ids.data()),
                                                  nullptr, thrust::raw_pointer_cast(lp.data()),
                                                  nullptr, 1.0, ctx);
      },
      "token_ids", "expected ids in [0, V = 1000), got 1000 at logits row 1");
  check_invalid(
      [&] {
        rlcore::cuda::token_log_probs<float, int>(logits, thrust::raw_pointer_cast(ids.data()),
                                                  nullptr, thrust::raw_pointer_cast(lp.data()),
                                                  nullptr, 0.0, ctx);
      },
      "temperature", "expected a finite temperature > 0");
  std::size_t bytes = 0;
  rlcore::cuda::token_log_probs<float, int>(nullptr, bytes, logits, nullptr, nullptr, nullptr,
                                            nullptr, 1.0, nullptr);
  CHECK(bytes == rlcore::cuda::token_log_probs_temp_bytes);
}

TEST_CASE("token log-probs: accuracy of the fast exp2 path against double, bf16 V = 152064") {
  // The measured error of fp32 accumulation with exp2_fast (one MUFU.EX2 per logit): relative to
  // max(1, |lp|) for lp and to H for the entropy, over 16 rows of N(0, 3^2) bf16 logits and 16
  // rows of N(0, 0.3^2) ones (high entropy, H ~ log V).
  const index_t vocab = 152064;
  const index_t rows = 32;
  auto host = random_logits<__nv_bfloat16>(rows * vocab, 2026);
  for (index_t j = 16 * vocab; j < rows * vocab; ++j) {
    host[j] = to_logit<__nv_bfloat16>(0.1f * __bfloat162float(host[j]));
  }
  std::vector<int> ids(rows);
  for (index_t r = 0; r < rows; ++r) {
    ids[r] = static_cast<int>((r * 104729) % vocab);
  }
  thrust::device_vector<__nv_bfloat16> d(host.begin(), host.end());
  const auto dids = to_device(ids);
  thrust::device_vector<float> lp(rows);
  thrust::device_vector<float> h(rows);
  for (const double tau : {1.0, 0.7}) {
    rlcore::cuda::token_log_probs<__nv_bfloat16, int>(
        {thrust::raw_pointer_cast(d.data()), rows, vocab, vocab, 1},
        thrust::raw_pointer_cast(dids.data()), nullptr, thrust::raw_pointer_cast(lp.data()),
        thrust::raw_pointer_cast(h.data()), tau, ctx);
    const auto lp_h = to_host(lp);
    const auto h_h = to_host(h);
    double worst_lp = 0;
    double worst_h = 0;
    for (index_t r = 0; r < rows; ++r) {
      const auto ref = reference_row(host.data() + r * vocab, vocab, tau);
      const double want = ref.log_p[ids[r]];
      worst_lp = std::max(worst_lp, std::abs(lp_h[r] - want) / std::max(1.0, std::abs(want)));
      worst_h = std::max(worst_h, std::abs(h_h[r] - ref.entropy) / ref.entropy);
    }
    MESSAGE("tau ", tau, ": max relative error lp ", worst_lp, ", entropy ", worst_h);
    CHECK(worst_lp <= 1e-6);
    CHECK(worst_h <= 1e-6);
  }
}

TEST_CASE_TEMPLATE(
    "token log-probs: NaN / inf logits are an error by default, propagate on request", T,
    __nv_bfloat16, float) {
  const index_t vocab = 4099;
  const index_t rows = 5;
  auto host = random_logits<T>(rows * vocab, 77);
  const float inf = std::numeric_limits<float>::infinity();
  host[3 * vocab + 17] = to_logit<T>(std::numeric_limits<float>::quiet_NaN());
  host[1 * vocab + 4000] = to_logit<T>(inf);
  host[2 * vocab + 5] = to_logit<T>(-inf); // a vocabulary mask under propagate
  host[4 * vocab + 9] = to_logit<T>(std::numeric_limits<float>::quiet_NaN()); // masked row
  const std::vector<int> ids{1, 2, 3, 4, 5};
  const std::vector<std::uint8_t> mask{1, 1, 1, 1, 0};
  thrust::device_vector<T> d(host.begin(), host.end());
  const auto dids = to_device(ids);
  const auto dmask = to_device(mask);
  thrust::device_vector<float> lp(rows);
  thrust::device_vector<float> h(rows);
  const rlcore::matrix_view<const T, device_space> logits{thrust::raw_pointer_cast(d.data()), rows,
                                                          vocab, vocab, 1};
  const auto run = [&](const rlcore::logits_options& o) {
    rlcore::cuda::token_log_probs<T, int>(
        logits, thrust::raw_pointer_cast(dids.data()), thrust::raw_pointer_cast(dmask.data()),
        thrust::raw_pointer_cast(lp.data()), thrust::raw_pointer_cast(h.data()), o, ctx);
  };
  // Default (error): the first valid row with a NaN or inf is named, with the CPU's message.
  check_invalid([&] { run({}); }, "logits", "got a NaN or inf in logits row 1");
  check_invalid(
      [&] {
        rlcore::cuda::token_log_probs<T, int>(
            logits, thrust::raw_pointer_cast(dids.data()), thrust::raw_pointer_cast(dmask.data()),
            thrust::raw_pointer_cast(lp.data()), nullptr, 1.0, ctx);
      },
      "logits", "expected finite logits in every valid row");
  // propagate: +inf / NaN rows give NaN, the -inf logit has probability 0, other rows exact.
  rlcore::logits_options propagate;
  propagate.nonfinite_logits = rlcore::nonfinite_logits_policy::propagate;
  run(propagate);
  const auto lp_h = to_host(lp);
  const auto h_h = to_host(h);
  CHECK(std::isnan(lp_h[1]));
  CHECK(std::isnan(lp_h[3]));
  CHECK(lp_h[4] == 0.0f);
  for (index_t r : {index_t{0}, index_t{2}}) {
    const auto ref = reference_row(host.data() + r * vocab, vocab, 1.0);
    CHECK(std::abs(lp_h[r] - ref.log_p[ids[r]])
          <= 2e-6 * std::max(1.0, std::abs(ref.log_p[ids[r]])));
    CHECK(std::abs(h_h[r] - ref.entropy) <= 2e-6 * ref.entropy);
  }
  // The two-phase call: check_token_log_probs applies the policy, check_token_ids does not.
  std::size_t bytes = 0;
  rlcore::cuda::token_log_probs<T, int>(nullptr, bytes, logits, nullptr, nullptr, nullptr, nullptr,
                                        1.0, nullptr);
  thrust::device_vector<unsigned char> temp(bytes);
  rlcore::cuda::token_log_probs<T, int>(thrust::raw_pointer_cast(temp.data()), bytes, logits,
                                        thrust::raw_pointer_cast(dids.data()),
                                        thrust::raw_pointer_cast(dmask.data()),
                                        thrust::raw_pointer_cast(lp.data()), nullptr, 1.0, nullptr);
  rlcore::cuda::check_token_ids(thrust::raw_pointer_cast(temp.data()),
                                thrust::raw_pointer_cast(dids.data()), vocab, nullptr);
  rlcore::cuda::check_token_log_probs(thrust::raw_pointer_cast(temp.data()),
                                      thrust::raw_pointer_cast(dids.data()), vocab,
                                      rlcore::nonfinite_logits_policy::propagate, nullptr);
  check_invalid(
      [&] {
        rlcore::cuda::check_token_log_probs(thrust::raw_pointer_cast(temp.data()),
                                            thrust::raw_pointer_cast(dids.data()), vocab,
                                            rlcore::nonfinite_logits_policy::error, nullptr);
      },
      "logits", "got a NaN or inf in logits row 1");
}

TEST_CASE("token log-probs: huge finite bf16 logits take the exact path, no error") {
  // z k overflows fp32 for |z| > 2.4e38: the fast statistics are unusable and the row is
  // recomputed with math/softmax.hpp. All the mass is on the id: lp = 0, H = 0.
  const index_t vocab = 1000;
  std::vector<__nv_bfloat16> host(2 * vocab, to_logit<__nv_bfloat16>(0.0f));
  host[7] = to_logit<__nv_bfloat16>(3.38e38f);
  host[8] = to_logit<__nv_bfloat16>(-3.38e38f);
  host[vocab + 999] = to_logit<__nv_bfloat16>(2.5e38f);
  thrust::device_vector<__nv_bfloat16> d(host.begin(), host.end());
  const auto ids = to_device(std::vector<int>{7, 999});
  thrust::device_vector<float> lp(2, -1.0f);
  thrust::device_vector<float> h(2, -1.0f);
  rlcore::cuda::token_log_probs<__nv_bfloat16, int>(
      {thrust::raw_pointer_cast(d.data()), 2, vocab, vocab, 1},
      thrust::raw_pointer_cast(ids.data()), nullptr, thrust::raw_pointer_cast(lp.data()),
      thrust::raw_pointer_cast(h.data()), 1.0, ctx);
  for (float x : to_host(lp)) {
    CHECK(x == 0.0f);
  }
  for (float x : to_host(h)) {
    CHECK(x == 0.0f);
  }
}

namespace {

/// Fused GRPO from logits vs the CPU: lp from the double reference, the CPU grpo_objective (the
/// generic algorithm, double) for the loss and d loss / d lp, chained through (onehot - p) / tau.
/// n x t_len token slots: 3 x 4 with two masked slots, or (more rows than resident clusters:
/// several waves of clusters) every 7th slot masked and the first 3 slots of every 5th sequence.
/// Token ids (r * 7919) % V, V - 1 at slot 1, or first_ids[r] for the first slots when given.
/// The views start `offset` elements into their allocations (offset 1 .. 7: bf16 rows 2 .. 14
/// bytes past a 16-byte boundary), which end `guard` elements past the last row. Elements outside
/// the gradient view (the first `offset`, the row padding V .. stride - 1, the guard) must keep the
/// value they had (a sentinel, or the logits in place). Returns lp and the gradient view's rows.
template <class T>
struct fused_outputs {
  std::vector<float> lp;
  std::vector<T> grad; ///< slots x stride, from the view's start
  int planned = 0;     ///< the cluster size plan_cluster chose for the views (0: two-pass kernel)
};
template <class T>
fused_outputs<T> check_fused_grpo(index_t vocab, bool in_place, double tau, index_t stride = 0,
                                  int cluster_size = 0, index_t n = 3, index_t t_len = 4,
                                  const std::vector<int>& first_ids = {}, index_t offset = 0) {
  stride = stride == 0 ? vocab : stride;
  INFO("vocab ", vocab, " stride ", stride, " in_place ", in_place, " bytes ", sizeof(T),
       " cluster ", cluster_size, " slots ", n * t_len, " offset ", offset);
  const index_t slots = n * t_len;
  const index_t guard = 16;
  const index_t allocated = offset + slots * stride + guard;
  auto host_allocation = random_logits<T>(allocated, 99 + vocab);
  const T* host = host_allocation.data() + offset;
  std::vector<std::uint8_t> mask{1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1};
  if (slots != 12) {
    mask.assign(slots, 1);
    for (index_t r = 0; r < slots; ++r) {
      const index_t t = r % t_len;
      mask[r] = (r % 7 == 3 || ((r / t_len) % 5 == 2 && t < 3)) ? 0 : 1;
    }
  }
  std::vector<int> ids(slots);
  for (index_t r = 0; r < slots; ++r) {
    ids[r] = static_cast<int>((r * 7919) % vocab);
  }
  ids[1] = static_cast<int>(vocab - 1);
  std::copy(first_ids.begin(), first_ids.end(), ids.begin());
  std::vector<double> lp_ref(slots, 0.0);
  std::vector<row_reference> refs(slots);
  for (index_t r = 0; r < slots; ++r) {
    refs[r] = reference_row(host + r * stride, vocab, tau);
    lp_ref[r] = refs[r].log_p[ids[r]];
  }
  // old / ref near lp so that some ratios clip and some do not.
  auto noise = uniform<float>(2 * slots, -0.4, 0.4, 3);
  std::vector<float> old(slots);
  std::vector<float> ref(slots);
  for (index_t r = 0; r < slots; ++r) {
    old[r] = static_cast<float>(lp_ref[r] + noise[r]);
    ref[r] = static_cast<float>(lp_ref[r] + noise[slots + r]);
  }
  const auto adv = uniform<float>(slots, -1.5, 1.5, 4);

  // CPU reference: the generic grpo_objective in double.
  const auto hlayout = rlcore::padded(rlcore::make_matrix_view(mask.data(), n, t_len));
  std::vector<double> old_d(old.begin(), old.end());
  std::vector<double> ref_d(ref.begin(), ref.end());
  std::vector<double> adv_d(adv.begin(), adv.end());
  std::vector<double> grad_lp(slots);
  auto grad_view = rlcore::make_matrix_view(grad_lp.data(), n, t_len);
  const auto expected =
      rlcore::grpo_objective(hlayout, rlcore::make_matrix_view(lp_ref.data(), n, t_len),
                             rlcore::make_matrix_view(old_d.data(), n, t_len),
                             rlcore::make_matrix_view(ref_d.data(), n, t_len),
                             rlcore::make_matrix_view(adv_d.data(), n, t_len), grad_view);

  thrust::device_vector<T> d(host_allocation.begin(), host_allocation.end());
  const T sentinel = to_logit<T>(12.5f);
  thrust::device_vector<T> dgrad(in_place ? 0 : allocated, sentinel);
  const auto dmask = to_device(mask);
  const auto dids = to_device(ids);
  const auto dold = to_device(old);
  const auto dref = to_device(ref);
  const auto dadv = to_device(adv);
  thrust::device_vector<float> dlp(slots, -7.0f);
  T* grad_ptr =
      offset
      + (in_place ? thrust::raw_pointer_cast(d.data()) : thrust::raw_pointer_cast(dgrad.data()));
  const auto layout = rlcore::cuda::padded(dmat(dmask, n, t_len));
  auto mat = [&](const auto& v) { return dmat(v, n, t_len); };
  rlcore::logits_options logits_opts;
  logits_opts.temperature = tau;
  const rlcore::matrix_view<const T, device_space> dlogits_view{
      thrust::raw_pointer_cast(d.data()) + offset, slots, vocab, stride, 1};
  const rlcore::matrix_view<T, device_space> dgrad_view{grad_ptr, slots, vocab, stride, 1};
  // The kernel choice for these views, as fused_policy_loss_from_logits makes it.
  using layout_type = std::remove_cv_t<decltype(layout)>;
  using id_view =
      const decltype(layout.bind("test", "token_ids", std::declval<const decltype(mat(dids))&>()));
  using float_view = const decltype(layout.bind("test", "old_log_probs",
                                                std::declval<const decltype(mat(dold))&>()));
  using maker =
      rlcore::cuda::detail::make_policy_token_pass<layout_type, float_view, float_view, float_view>;
  const auto plan_size = [&](auto* kernel) {
    return rlcore::cuda::detail::plan_cluster<T>(kernel, dlogits_view, dgrad_view, cluster_size)
        .size;
  };
  const int planned =
      static_cast<float>(1.0 / tau) == 1.0f
          ? plan_size(
              rlcore::cuda::detail::fused_logits_cluster_kernel<
                  true, true, T, id_view, layout_type, maker, rlcore::detail::policy_token_sums>)
          : plan_size(
              rlcore::cuda::detail::fused_logits_cluster_kernel<
                  false, true, T, id_view, layout_type, maker, rlcore::detail::policy_token_sums>);
  const auto result = rlcore::cuda::detail::fused_policy_loss_from_logits(
      layout, dlogits_view, mat(dids), mat(dold), mat(dadv), mat(dref), dgrad_view,
      rlcore::grpo_options{}.as_policy_options(), logits_opts, ctx,
      thrust::raw_pointer_cast(dlp.data()), cluster_size);

  CHECK(std::abs(result.loss - expected.loss) <= 1e-5 * std::max(1.0, std::abs(expected.loss)));
  CHECK(result.metrics.valid_tokens == expected.metrics.valid_tokens);
  CHECK(result.metrics.clip_fraction == expected.metrics.clip_fraction);
  const auto lp_dev = to_host(dlp);
  std::vector<T> grad_allocation(allocated);
  thrust::copy(in_place ? d.begin() : dgrad.begin(), in_place ? d.end() : dgrad.end(),
               grad_allocation.begin());
  const T* grad_dev = grad_allocation.data() + offset;
  const double out_eps = sizeof(T) == 2 ? (std::is_same_v<T, __half> ? 1e-3 : 8e-3) : 2e-5;
  double worst = 0;
  index_t worst_row = 0;
  double largest_grad_lp = 1e-30;
  for (double g : grad_lp) {
    largest_grad_lp = std::max(largest_grad_lp, std::abs(g));
  }
  bool outside_kept = true;
  const auto kept = [&](index_t e) { // element e of the allocations
    const double before = from_logit(in_place ? host_allocation[e] : sentinel);
    outside_kept = outside_kept && from_logit(grad_allocation[e]) == before;
  };
  for (index_t e = 0; e < offset; ++e) {
    kept(e);
  }
  for (index_t r = 0; r < slots; ++r) {
    for (index_t j = vocab; j < stride; ++j) {
      kept(offset + r * stride + j);
    }
  }
  for (index_t e = offset + slots * stride; e < allocated; ++e) {
    kept(e);
  }
  CHECK(outside_kept);
  for (index_t r = 0; r < slots; ++r) {
    if (mask[r] == 0) {
      CHECK(lp_dev[r] == 0.0f);
      bool zero = true;
      for (index_t j = 0; j < vocab; ++j) {
        zero = zero && from_logit(grad_dev[r * stride + j]) == 0.0;
      }
      CHECK(zero);
      continue;
    }
    CHECK(std::abs(lp_dev[r] - lp_ref[r]) <= 2e-5 * std::max(1.0, std::abs(lp_ref[r])));
    // d loss / d lp is computed in float on the device; where the surrogate and KL terms cancel
    // (|d loss / d lp| ~1e-4 of the batch's largest) its relative error grows, so errors are
    // measured against the larger of the row's scale and 1e-2 x the batch's largest.
    double scale = 1e-2 * largest_grad_lp;
    double err = 0;
    for (index_t j = 0; j < vocab; ++j) {
      const double p = std::exp(refs[r].log_p[j]);
      const double g = grad_lp[r] * ((j == ids[r] ? 1.0 : 0.0) - p) / tau;
      scale = std::max(scale, std::abs(g));
      err = std::max(err, std::abs(from_logit(grad_dev[r * stride + j]) - g));
    }
    if (err / scale > worst) {
      worst = err / scale;
      worst_row = r;
    }
  }
  INFO("worst row ", worst_row, ": d loss / d lp ", grad_lp[worst_row], " (largest ",
       largest_grad_lp, "), lp ", lp_ref[worst_row], " old ", old[worst_row], " ref ",
       ref[worst_row], " adv ", adv[worst_row]);
  CHECK(worst <= out_eps);
  return {lp_dev, std::vector<T>(grad_dev, grad_dev + slots * stride), planned};
}

} // namespace

TEST_CASE_TEMPLATE("fused GRPO from logits: loss, lp and d loss / d logits match the CPU", T,
                   __nv_bfloat16, __half, float) {
  check_fused_grpo<T>(32001, false, 1.0);         // rows at every 16-byte offset: cluster kernel
  check_fused_grpo<T>(32001, false, 1.0, 0, -1);  // the same rows, two-pass kernel
  check_fused_grpo<T>(151936, false, 1.0);        // cluster kernel, automatic size
  check_fused_grpo<T>(1031, true, 0.8);           // in place over the logits, cluster kernel
  check_fused_grpo<T>(1031, true, 0.8, 0, -1);    // in place, two-pass kernel
  check_fused_grpo<T>(32001, false, 1.0, 32008);  // cluster kernel, vocabulary tail of 1
  check_fused_grpo<T>(5003, true, 0.8, 5008);     // cluster kernel in place, tail, temperature
  for (int cluster : {-1, 1, 2, 3, 4, 5, 6, 8}) { // every cluster size and the two-pass kernel
    check_fused_grpo<T>(20005, false, 1.0, 20008, cluster);
  }
  check_fused_grpo<T>(7, false, 1.0, 8, 4); // shorter than a vector: ranks without a slice
}

TEST_CASE_TEMPLATE("fused GRPO from logits: target logit at every slice boundary and in the tail",
                   T, __nv_bfloat16, float) {
  // V = 20005 in rows of 20008: 2500 bf16 vectors (625 per rank with 4 CTAs: slices start at
  // 5000, 10000, 15000; tail 20000..20004), 5001 fp32 vectors (1251 per rank: 5004, 10008, 15012;
  // tail 20004); with 3 CTAs, bf16 slices start at 6672 and 13344, fp32 ones at 6668 and 13336.
  // The CTA whose slice holds the id sends the target logit to the others; the masked slots of
  // this 5 x 6 layout are 3, 10, 12, 13, 14, 17, 24.
  const std::vector<int> boundary_ids{
      0, 4999,  5000,  0, 5003,  5004,  6671,  6672,  9999,  10000, 0, 10007, 0,     0,
      0, 10008, 15000, 0, 15011, 15012, 20000, 20003, 20004, 13343, 0, 13344, 13336, 6668};
  for (int cluster : {3, 4}) {
    check_fused_grpo<T>(20005, false, 1.0, 20008, cluster, 5, 6, boundary_ids);
  }
  check_fused_grpo<T>(20005, true, 0.9, 20008, 4, 5, 6, boundary_ids); // in place
}

TEST_CASE_TEMPLATE("fused GRPO from logits: cluster kernel on rows at any offset from 16 bytes", T,
                   __nv_bfloat16, __half, float) {
  // The cluster kernel takes rows that do not start on a 16-byte boundary: the head before the
  // first boundary from global memory on rank 0, the vectors in the slices. Rows of V = 32,001
  // (bf16 / fp16 rows of 64,002 bytes, fp32 128,004: row r starts 2r / 4r bytes past a boundary,
  // every offset in turn), sub-views starting 1 .. 7 elements into their allocations (every row
  // at the same offset; ids in the head, at its end and in the tail), in place, and rows shorter
  // than a head. Each matches the CPU (check_fused_grpo, which also checks that nothing outside
  // the view is written) and the two-pass kernel on the same data: lp within 2e-5 relative, the
  // gradient within the CPU check's tolerance of the two-pass one.
  const double out_eps = sizeof(T) == 2 ? (std::is_same_v<T, __half> ? 1e-3 : 8e-3) : 2e-5;
  const auto compare = [&](const fused_outputs<T>& cluster, const fused_outputs<T>& two_pass,
                           index_t vocab, index_t stride) {
    CHECK(cluster.planned > 0);
    CHECK(two_pass.planned == 0);
    double worst_lp = 0;
    for (std::size_t r = 0; r < two_pass.lp.size(); ++r) {
      worst_lp = std::max(worst_lp, std::abs(double(cluster.lp[r]) - double(two_pass.lp[r]))
                                        / std::max(1.0, std::abs(double(two_pass.lp[r]))));
    }
    CHECK(worst_lp <= 2e-5);
    double largest_grad = 0;
    for (const T& x : two_pass.grad) {
      largest_grad = std::max(largest_grad, std::abs(from_logit(x)));
    }
    double worst = 0;
    for (std::size_t r = 0; r < two_pass.lp.size(); ++r) {
      double scale = std::max(1e-2 * largest_grad, 1e-30);
      double err = 0;
      for (index_t j = 0; j < vocab; ++j) {
        const double a = from_logit(cluster.grad[r * stride + j]);
        const double b = from_logit(two_pass.grad[r * stride + j]);
        scale = std::max(scale, std::abs(b));
        err = std::max(err, std::abs(a - b));
      }
      worst = std::max(worst, err / scale);
    }
    CHECK(worst <= out_eps);
  };
  for (const bool in_place : {false, true}) {
    INFO("V = 32001, in place ", in_place);
    compare(check_fused_grpo<T>(32001, in_place, 1.0),
            check_fused_grpo<T>(32001, in_place, 1.0, 0, -1), 32001, 32001);
    compare(check_fused_grpo<T>(32001, in_place, 1.0, 0, 4),
            check_fused_grpo<T>(32001, in_place, 1.0, 0, -1), 32001, 32001);
  }
  // Slots 3 and 5 are masked; with offset o, a bf16 row's head is 8 - o elements (fp32: 4 - o
  // mod 4), so ids 0 .. 9 cover the head, its last element and the first vectors.
  const std::vector<int> head_ids{0, 20004, 1, 0, 6, 0, 7, 8, 9, 5000, 15000, 20000};
  for (index_t offset = 1; offset <= 7; ++offset) {
    for (const int cluster : {3, 4}) {
      compare(check_fused_grpo<T>(20005, false, 1.0, 20008, cluster, 3, 4, head_ids, offset),
              check_fused_grpo<T>(20005, false, 1.0, 20008, -1, 3, 4, head_ids, offset), 20005,
              20008);
    }
    compare(check_fused_grpo<T>(20005, true, 0.9, 20008, 4, 3, 4, head_ids, offset),
            check_fused_grpo<T>(20005, true, 0.9, 20008, -1, 3, 4, head_ids, offset), 20005, 20008);
    // Rows shorter than a head, or a head and a tail with no whole vector between them.
    for (const index_t vocab : {index_t{5}, index_t{7}, index_t{13}}) {
      compare(check_fused_grpo<T>(vocab, false, 1.0, 16, 4, 3, 4, {}, offset),
              check_fused_grpo<T>(vocab, false, 1.0, 16, -1, 3, 4, {}, offset), vocab, 16);
    }
  }
}

TEST_CASE("fused logits gradient: bf16 within 0.6 bf16 ulp of double, V = 152064") {
  // REINFORCE without KL, token-mean: d loss / d lp = -A / N exactly, so the error measured is
  // the kernel's (softmax statistics, probabilities, bf16 rounding), element by element in units
  // of the bf16 spacing at the double reference's value: the fp32 value is within ~1e-5
  // relative, so rounding it to bf16 leaves <= 0.5 ulp + 0.01.
  const index_t n = 2;
  const index_t t_len = 8;
  const index_t slots = n * t_len;
  const index_t vocab = 152064;
  auto host = random_logits<__nv_bfloat16>(slots * vocab, 4242);
  std::vector<int> ids(slots);
  for (index_t r = 0; r < slots; ++r) {
    ids[r] = static_cast<int>((r * 9973 + 5) % vocab);
  }
  const auto adv = uniform<float>(slots, -1.5, 1.5, 8);
  const auto old = uniform<float>(slots, -14, -10, 9);
  thrust::device_vector<__nv_bfloat16> d(host.begin(), host.end());
  thrust::device_vector<__nv_bfloat16> dgrad(slots * vocab);
  const auto dids = to_device(ids);
  const auto dadv = to_device(adv);
  const auto dold = to_device(old);
  const auto layout = rlcore::cuda::padded_unmasked(n, t_len);
  auto mat = [&](const auto& v) { return dmat(v, n, t_len); };
  rlcore::policy_options options;
  options.loss = rlcore::policy_loss::reinforce;
  (void)rlcore::cuda::policy_loss_from_logits(
      layout,
      rlcore::matrix_view<const __nv_bfloat16, device_space>{thrust::raw_pointer_cast(d.data()),
                                                             slots, vocab, vocab, 1},
      mat(dids), mat(dold), mat(dadv), mat(dold),
      rlcore::matrix_view<__nv_bfloat16, device_space>{thrust::raw_pointer_cast(dgrad.data()),
                                                       slots, vocab, vocab, 1},
      options, {}, ctx);
  std::vector<__nv_bfloat16> grad(slots * vocab);
  thrust::copy(dgrad.begin(), dgrad.end(), grad.begin());
  double worst_ulps = 0;
  for (index_t r = 0; r < slots; ++r) {
    const auto ref = reference_row(host.data() + r * vocab, vocab, 1.0);
    const double grad_lp = -double(adv[r]) / double(slots);
    for (index_t j = 0; j < vocab; ++j) {
      const double expected = grad_lp * ((j == ids[r] ? 1.0 : 0.0) - std::exp(ref.log_p[j]));
      const double spacing = std::ldexp(1.0, std::ilogb(expected) - 7); // bf16: 8-bit significand
      worst_ulps =
          std::max(worst_ulps, std::abs(from_logit(grad[r * vocab + j]) - expected) / spacing);
    }
  }
  MESSAGE("max error of d loss / d logits: ", worst_ulps, " bf16 ulps");
  CHECK(worst_ulps <= 0.6);
}

TEST_CASE_TEMPLATE("fused GRPO from logits: many rows, more than the resident clusters", T,
                   __nv_bfloat16, float) {
  // 1200 slots: several waves of clusters, masked rows and runs of masked rows in between.
  for (int cluster : {0, 1, 3, 4, 8}) {
    check_fused_grpo<T>(4099, false, 1.0, 4104, cluster, 40, 30); // vocabulary tail of 3
  }
  check_fused_grpo<T>(4099, true, 0.7, 4104, 0, 40, 30); // in place, temperature
}

TEST_CASE("fused GRPO from logits: bitwise repeatable") {
  const index_t slots = 64;
  const index_t vocab = 5003;
  auto host = random_logits<float>(slots * vocab, 1);
  thrust::device_vector<float> d(host.begin(), host.end());
  thrust::device_vector<float> g1(slots * vocab);
  thrust::device_vector<float> g2(slots * vocab);
  const auto ids = to_device(std::vector<int>(slots, 17));
  const auto old = to_device(uniform<float>(slots, -9, -8, 2));
  const auto ref = to_device(uniform<float>(slots, -9, -8, 3));
  const auto adv = to_device(uniform<float>(slots, -1, 1, 4));
  const auto layout = rlcore::cuda::padded_unmasked(8, 8);
  auto mat = [&](const auto& v) {
    return rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(v.data()), 8, 8);
  };
  const rlcore::matrix_view<const float, device_space> logits{thrust::raw_pointer_cast(d.data()),
                                                              slots, vocab, vocab, 1};
  const auto r1 = rlcore::cuda::grpo_loss_from_logits(
      layout, logits, mat(ids), mat(old), mat(ref), mat(adv),
      rlcore::matrix_view<float, device_space>{thrust::raw_pointer_cast(g1.data()), slots, vocab,
                                               vocab, 1},
      {}, {}, ctx);
  const auto r2 = rlcore::cuda::grpo_loss_from_logits(
      layout, logits, mat(ids), mat(old), mat(ref), mat(adv),
      rlcore::matrix_view<float, device_space>{thrust::raw_pointer_cast(g2.data()), slots, vocab,
                                               vocab, 1},
      {}, {}, ctx);
  CHECK(std::memcmp(&r1.loss, &r2.loss, sizeof(double)) == 0);
  CHECK(bitwise_equal(to_host(g1), to_host(g2)));
  const auto bad_ids = to_device(std::vector<int>(slots, 5003));
  check_invalid(
      [&] {
        (void)rlcore::cuda::grpo_loss_from_logits(
            layout, logits, mat(bad_ids), mat(old), mat(ref), mat(adv),
            rlcore::matrix_view<float, device_space>{thrust::raw_pointer_cast(g1.data()), slots,
                                                     vocab, vocab, 1},
            {}, {}, ctx);
      },
      "token_ids", "expected ids in [0, V = 5003), got 5003 at logits row 0");
  // Options the fused kernel does not implement are rejected by name.
  const auto with = [&](auto set, const char* argument, const char* fragment) {
    rlcore::policy_options o = rlcore::grpo_options{}.as_policy_options();
    set(o);
    check_invalid(
        [&] {
          (void)rlcore::cuda::policy_loss_from_logits(
              layout, logits, mat(ids), mat(old), mat(adv), mat(ref),
              rlcore::matrix_view<float, device_space>{thrust::raw_pointer_cast(g1.data()), slots,
                                                       vocab, vocab, 1},
              o, {}, ctx);
        },
        argument, fragment);
  };
  with([](rlcore::policy_options& o) { o.entropy_coef = 0.01; }, "options.entropy_coef",
       "the fused logits kernel has no entropy bonus");
  with([](rlcore::policy_options& o) { o.entropy_top_fraction = 0.2; },
       "options.entropy_top_fraction", "the fused logits kernel has no entropy masking");
}

TEST_CASE_TEMPLATE("fused GRPO from logits: NaN / inf policy and huge finite logits", T,
                   __nv_bfloat16, float) {
  const index_t n = 2;
  const index_t t_len = 4;
  const index_t slots = n * t_len;
  const index_t vocab = 3000; // 16-byte aligned rows in bf16 and fp32: the cluster kernel
  auto host = random_logits<T>(slots * vocab, 5);
  const float inf = std::numeric_limits<float>::infinity();
  host[5 * vocab + 11] = to_logit<T>(std::numeric_limits<float>::quiet_NaN());
  host[2 * vocab + 2999] = to_logit<T>(-inf); // a vocabulary mask under propagate
  host[3 * vocab + 1] = to_logit<T>(std::numeric_limits<float>::quiet_NaN()); // masked slot
  host[6 * vocab + 40] = to_logit<T>(3.3e38f); // huge but finite: exact path, no error
  host[6 * vocab + 41] = to_logit<T>(-3.3e38f);
  const std::vector<std::uint8_t> mask{1, 1, 1, 0, 1, 1, 1, 1};
  const auto dmask = to_device(mask);
  const auto ids = to_device(std::vector<int>{1, 2, 3, 4, 5, 6, 40, 8});
  const auto old = to_device(uniform<float>(slots, -9, -8, 2));
  const auto ref = to_device(uniform<float>(slots, -9, -8, 3));
  const auto adv = to_device(uniform<float>(slots, -1, 1, 4));
  const auto layout = rlcore::cuda::padded(dmat(dmask, n, t_len));
  auto mat = [&](const auto& v) { return dmat(v, n, t_len); };
  for (int cluster : {0, -1}) {
    INFO("cluster ", cluster);
    thrust::device_vector<T> d(host.begin(), host.end());
    thrust::device_vector<T> g(slots * vocab);
    thrust::device_vector<float> lp(slots);
    const rlcore::matrix_view<const T, device_space> logits{thrust::raw_pointer_cast(d.data()),
                                                            slots, vocab, vocab, 1};
    const rlcore::matrix_view<T, device_space> grad{thrust::raw_pointer_cast(g.data()), slots,
                                                    vocab, vocab, 1};
    const auto run = [&](const rlcore::logits_options& o) {
      return rlcore::cuda::detail::fused_policy_loss_from_logits(
          layout, logits, mat(ids), mat(old), mat(adv), mat(ref), grad,
          rlcore::grpo_options{}.as_policy_options(), o, ctx, thrust::raw_pointer_cast(lp.data()),
          cluster);
    };
    check_invalid([&] { (void)run({}); }, "logits",
                  "got a NaN or inf in logits row 2"); // -inf counts
    rlcore::logits_options propagate;
    propagate.nonfinite_logits = rlcore::nonfinite_logits_policy::propagate;
    const auto result = run(propagate);
    CHECK(std::isnan(result.loss));
    const auto lp_h = to_host(lp);
    const auto g_h = to_host(g);
    CHECK(std::isnan(lp_h[5]));
    CHECK(lp_h[3] == 0.0f);
    CHECK(lp_h[6] == 0.0f); // all the mass on the id (z = 3.3e38)
    const auto row2 = reference_row(host.data() + 2 * vocab, vocab, 1.0);
    CHECK(std::abs(lp_h[2] - row2.log_p[3]) <= 2e-6 * std::abs(row2.log_p[3]));
    CHECK(from_logit(g_h[2 * vocab + 2999]) == 0.0); // p = 0 at the -inf logit
    bool finite = true;
    for (index_t r : {index_t{0}, index_t{1}, index_t{2}, index_t{4}, index_t{6}, index_t{7}}) {
      for (index_t j = 0; j < vocab; ++j) {
        finite = finite && std::isfinite(from_logit(g_h[r * vocab + j]));
      }
    }
    CHECK(finite);
  }
}

TEST_CASE("fused GRPO from logits: exact-fallback rows among many rows") {
  // 1024 slots of bf16 V = 3000 with non-finite and huge finite logits in rows spread over several
  // waves of clusters (consecutive rows too): only those rows take the exact path, the flags name
  // the first such row, every other row matches the double reference.
  using T = __nv_bfloat16;
  const index_t n = 64;
  const index_t t_len = 16;
  const index_t slots = n * t_len;
  const index_t vocab = 3000;
  auto host = random_logits<T>(slots * vocab, 8);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  host[5 * vocab + 7] = to_logit<T>(nan);
  host[6 * vocab + 2999] = to_logit<T>(nan);
  host[300 * vocab + 1500] = to_logit<T>(inf);
  host[301 * vocab + 40] = to_logit<T>(3.3e38f); // huge finite: exact path, finite outputs
  host[700 * vocab + 11] = to_logit<T>(-inf);    // a vocabulary mask: exact path, finite outputs
  host[701 * vocab + 12] = to_logit<T>(-inf);
  std::vector<std::uint8_t> mask(slots, 1);
  for (index_t r = 0; r < slots; r += 9) {
    mask[r] = 0;
  }
  std::vector<int> ids(slots);
  for (index_t r = 0; r < slots; ++r) {
    ids[r] = static_cast<int>((r * 31) % vocab);
  }
  ids[301] = 40;
  const auto dmask = to_device(mask);
  const auto dids = to_device(ids);
  const auto old = to_device(uniform<float>(slots, -9, -8, 2));
  const auto ref = to_device(uniform<float>(slots, -9, -8, 3));
  const auto adv = to_device(uniform<float>(slots, -1, 1, 4));
  const auto layout = rlcore::cuda::padded(dmat(dmask, n, t_len));
  auto mat = [&](const auto& v) { return dmat(v, n, t_len); };
  thrust::device_vector<T> d(host.begin(), host.end());
  thrust::device_vector<T> g(slots * vocab);
  thrust::device_vector<float> lp(slots);
  rlcore::logits_options propagate;
  propagate.nonfinite_logits = rlcore::nonfinite_logits_policy::propagate;
  for (int cluster : {0, 2, 3, 8}) {
    INFO("cluster ", cluster);
    const auto result = rlcore::cuda::detail::fused_policy_loss_from_logits(
        layout,
        rlcore::matrix_view<const T, device_space>{thrust::raw_pointer_cast(d.data()), slots, vocab,
                                                   vocab, 1},
        mat(dids), mat(old), mat(adv), mat(ref),
        rlcore::matrix_view<T, device_space>{thrust::raw_pointer_cast(g.data()), slots, vocab,
                                             vocab, 1},
        rlcore::grpo_options{}.as_policy_options(), propagate, ctx,
        thrust::raw_pointer_cast(lp.data()), cluster);
    CHECK(std::isnan(result.loss));
    const auto lp_h = to_host(lp);
    const auto g_h = to_host(g);
    CHECK(std::isnan(lp_h[5]));
    CHECK(std::isnan(lp_h[6]));
    CHECK(std::isnan(lp_h[300]));
    CHECK(lp_h[301] == 0.0f); // all the mass on the id
    double worst_lp = 0;
    bool finite = true;
    bool masked_zero = true;
    for (index_t r = 0; r < slots; ++r) {
      if (mask[r] == 0) {
        masked_zero = masked_zero && lp_h[r] == 0.0f;
        for (index_t j = 0; j < vocab; ++j) {
          masked_zero = masked_zero && from_logit(g_h[r * vocab + j]) == 0.0;
        }
        continue;
      }
      if (r == 5 || r == 6 || r == 300) {
        continue;
      }
      const auto reference = reference_row(host.data() + r * vocab, vocab, 1.0);
      const double expected = reference.log_p[ids[r]];
      worst_lp =
          std::max(worst_lp, std::abs(lp_h[r] - expected) / std::max(1.0, std::abs(expected)));
      for (index_t j = 0; j < vocab; ++j) {
        finite = finite && std::isfinite(from_logit(g_h[r * vocab + j]));
      }
    }
    CHECK(worst_lp <= 2e-6);
    CHECK(finite);
    CHECK(masked_zero);
    CHECK(from_logit(g_h[700 * vocab + 11]) == 0.0); // p = 0 at the -inf logit
    check_invalid(
        [&] {
          (void)rlcore::cuda::detail::fused_policy_loss_from_logits(
              layout,
              rlcore::matrix_view<const T, device_space>{thrust::raw_pointer_cast(d.data()), slots,
                                                         vocab, vocab, 1},
              mat(dids), mat(old), mat(adv), mat(ref),
              rlcore::matrix_view<T, device_space>{thrust::raw_pointer_cast(g.data()), slots, vocab,
                                                   vocab, 1},
              rlcore::grpo_options{}.as_policy_options(), {}, ctx, nullptr, cluster);
        },
        "logits", "got a NaN or inf in logits row 5");
  }
}

TEST_CASE_TEMPLATE("logits kernels keep their state in registers: no local memory", T,
                   __nv_bfloat16, __half, float) {
  // A softmax merge that selected a reference to one of its two states made every thread of the
  // cluster kernel write ~180 bytes of local memory per row slice, which reached L2 (the shared
  // memory carveout leaves L1 little room) and cost 10% of the fused kernel's time on the H200.
  using rlcore::cuda::detail::fused_logits_cluster_kernel;
  using rlcore::cuda::detail::make_policy_token_pass;
  using rlcore::cuda::detail::token_log_probs_kernel;
  using layout_type = decltype(rlcore::cuda::padded(
      std::declval<rlcore::matrix_view<std::uint8_t, device_space>>()));
  using ids_type = decltype(std::declval<const layout_type&>().bind(
      "", "", std::declval<const rlcore::matrix_view<int, device_space>&>()));
  using floats_type = decltype(std::declval<const layout_type&>().bind(
      "", "", std::declval<const rlcore::matrix_view<float, device_space>&>()));
  using maker = make_policy_token_pass<layout_type, floats_type, floats_type, floats_type>;
  using sums = rlcore::detail::policy_token_sums;
  const auto local_bytes = [](auto* kernel) {
    cudaFuncAttributes attributes{};
    REQUIRE(cudaFuncGetAttributes(&attributes, kernel) == cudaSuccess);
    return attributes.localSizeBytes;
  };
  CHECK(local_bytes(fused_logits_cluster_kernel<true, false, T, ids_type, layout_type, maker, sums>)
        == 0);
  CHECK(local_bytes(fused_logits_cluster_kernel<false, true, T, ids_type, layout_type, maker, sums>)
        == 0);
  CHECK(local_bytes(token_log_probs_kernel<true, T, int, std::uint8_t>) == 0);
  CHECK(local_bytes(token_log_probs_kernel<false, T, int, std::uint8_t>) == 0);
}

TEST_CASE("fused GRPO from logits: the two-phase form gives the one-call form's bits") {
  // 8 rows of 8 tokens with masked slots, bf16 logits, seq-mean-token-mean (the row pre-pass).
  const index_t n = 8;
  const index_t t_len = 8;
  const index_t slots = n * t_len;
  const index_t vocab = 4099;
  const auto host = random_logits<float>(slots * vocab, 5);
  std::vector<__nv_bfloat16> host_bf16(host.size());
  std::transform(host.begin(), host.end(), host_bf16.begin(),
                 [](float x) { return __float2bfloat16_rn(x); });
  const thrust::device_vector<__nv_bfloat16> d(host_bf16.begin(), host_bf16.end());
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(slots), 1);
  for (index_t k = 0; k < slots; k += 5) {
    mask[static_cast<std::size_t>(k)] = 0;
  }
  const auto dmask = to_device(mask);
  const auto ids = to_device(uniform<int>(static_cast<std::size_t>(slots), 0, 4098, 6));
  const auto old = to_device(uniform<float>(static_cast<std::size_t>(slots), -9, -8, 7));
  const auto ref = to_device(uniform<float>(static_cast<std::size_t>(slots), -9, -8, 8));
  const auto adv = to_device(uniform<float>(static_cast<std::size_t>(slots), -1, 1, 9));
  const auto layout = rlcore::cuda::padded(dmat(dmask, n, t_len));
  const rlcore::matrix_view<const __nv_bfloat16, device_space> logits{
      thrust::raw_pointer_cast(d.data()), slots, vocab, vocab, 1};
  const auto options = rlcore::grpo_options{}.as_policy_options();
  thrust::device_vector<__nv_bfloat16> g1(slots * vocab);
  thrust::device_vector<__nv_bfloat16> g2(slots * vocab);
  thrust::device_vector<float> lp1(slots);
  thrust::device_vector<float> lp2(slots);
  const auto grad = [&](thrust::device_vector<__nv_bfloat16>& g) {
    return rlcore::matrix_view<__nv_bfloat16, device_space>{thrust::raw_pointer_cast(g.data()),
                                                            slots, vocab, vocab, 1};
  };
  const auto r1 = rlcore::cuda::policy_loss_from_logits(
      layout, logits, dmat(ids, n, t_len), dmat(old, n, t_len), dmat(adv, n, t_len),
      dmat(ref, n, t_len), grad(g1), options, {}, ctx, thrust::raw_pointer_cast(lp1.data()));

  std::size_t bytes = 0;
  rlcore::cuda::policy_loss_from_logits(nullptr, bytes, layout, logits, dmat(ids, n, t_len),
                                        dmat(old, n, t_len), dmat(adv, n, t_len),
                                        dmat(ref, n, t_len), grad(g2), options, {}, ctx);
  REQUIRE(bytes > 0);
  thrust::device_vector<unsigned char> temp(bytes + 16);
  void* d_temp = thrust::raw_pointer_cast(temp.data());
  const auto enqueue = [&](void* at, std::size_t size, const auto& token_ids) {
    rlcore::cuda::policy_loss_from_logits(at, size, layout, logits, token_ids, dmat(old, n, t_len),
                                          dmat(adv, n, t_len), dmat(ref, n, t_len), grad(g2),
                                          options, {}, ctx, thrust::raw_pointer_cast(lp2.data()));
  };
  enqueue(d_temp, bytes, dmat(ids, n, t_len)); // twice back to back on one d_temp: the last
  enqueue(d_temp, bytes, dmat(ids, n, t_len)); // call's result is read
  const auto r2 = rlcore::cuda::finish_policy_loss_from_logits(d_temp, layout, dmat(ids, n, t_len),
                                                               vocab, options, {}, ctx);
  CHECK(std::memcmp(&r1.loss, &r2.loss, sizeof(double)) == 0);
  CHECK(std::memcmp(&r1.metrics, &r2.metrics, sizeof(r1.metrics)) == 0);
  CHECK(r2.metrics.valid_tokens
        == doctest::Approx(
            static_cast<double>(std::count(mask.begin(), mask.end(), std::uint8_t{1}))));
  CHECK(bitwise_equal(to_host(g1), to_host(g2)));
  CHECK(bitwise_equal(to_host(lp1), to_host(lp2)));

  // Arguments: too little storage, a misaligned d_temp; the kernels' errors surface in finish_.
  check_invalid([&] { enqueue(d_temp, bytes - 1, dmat(ids, n, t_len)); }, "temp_bytes",
                "expected at least");
  check_invalid(
      [&] { enqueue(static_cast<unsigned char*>(d_temp) + 8, bytes, dmat(ids, n, t_len)); },
      "d_temp", "16-byte aligned");
  std::vector<int> host_bad(static_cast<std::size_t>(slots), 3);
  host_bad[9] = static_cast<int>(vocab); // slot 9 is valid (9 % 5 != 0)
  const auto bad = to_device(host_bad);
  enqueue(d_temp, bytes, dmat(bad, n, t_len));
  check_invalid(
      [&] {
        (void)rlcore::cuda::finish_policy_loss_from_logits(d_temp, layout, dmat(bad, n, t_len),
                                                           vocab, options, {}, ctx);
      },
      "token_ids", "expected ids in [0, V = 4099), got 4099 at logits row 9");
}
