// The fused GAE with several CTAs per row (rlcore::cuda::gae_advantages, kernels/gae_kernels.cuh:
// a thread-block cluster per row, chunk aggregates exchanged through distributed shared memory)
// against the CPU in double, and its determinism: padded rows on the aligned 16-byte path (with
// and without a mask), the shifted 16-byte path (rows at any start: any T, sub-views, row pitch,
// packed rows at any offset; the bits of the per-element path, nothing written outside the
// views) and the per-element path, packed rows, rows shorter and longer than one chunk
// and than one round of the cluster, rows of length 1 and 0 valid tokens, chunk and piece
// boundaries at masked tokens, whole masked chunks, multi-turn masks, several rows per cluster in
// turn (grid-stride: a CTA prefetches the next row's first chunk), rows that start inside a warp's
// span of 4-token groups, many rows x long rows, gamma or lambda 0 or 1; bitwise equal across
// cluster sizes, grids, streams and runs.
#include "gae_test_util.cuh"

#include <rlcore/backend/cuda/advantage.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>

using rlcore::device_space;
using rlcore::index_t;
using rlcore::cuda::detail::gae_launch;
using namespace rlcore_test;

namespace {

constexpr index_t chunk8 = 256 * 8;   ///< tokens per CTA with 8 tokens per thread
constexpr index_t chunk16 = 256 * 16; ///< tokens per CTA with 16 tokens per thread

/// Checks `b` on every cluster size for `items`: within 1e-6 of the CPU (scaled), masked slots
/// 0, and the same bits for every cluster size and CTA cap (1 and 8: one or a few clusters take
/// the rows in turn).
void check_every_cluster(const gae_batch& b, const rlcore::gae_options& options, int items) {
  std::vector<double> ha;
  std::vector<double> hret;
  cpu_gae(b, options, ha, hret);
  const gae_outputs reference = gpu_gae(b, options, gae_launch{items, 1 << 16, 1});
  CHECK(scaled_error(reference.advantages, ha) < 1e-6);
  CHECK(scaled_error(reference.returns, hret) < 1e-6);
  CHECK(masked_slots_zero(b, reference));
  for (const int cluster : {0, 2, 4, 8}) {
    for (const index_t max_blocks : {index_t{1}, index_t{8}, index_t{1} << 16}) {
      INFO("items ", items, ", cluster ", cluster, ", max blocks ", max_blocks);
      const gae_outputs out = gpu_gae(b, options, gae_launch{items, max_blocks, cluster});
      CHECK(bitwise_equal(out.advantages, reference.advantages));
      CHECK(bitwise_equal(out.returns, reference.returns));
    }
  }
}

} // namespace

TEST_CASE("GAE across CTAs: hand-derived row whose two valid tokens sit in two chunks") {
  // T = 4096, gamma 0.5, lambda 0.5, only tokens 2047 and 2048 valid: with 2048 tokens per CTA
  // they lie in different chunks (CTA 1 and CTA 0 of a 2-CTA cluster):
  //   t = 2048: A = r - V = 1 - 4 = -3;                                 returns 1
  //   t = 2047: A = r + 0.5 * V_2048 - V + 0.25 * A_2048 = 2 + 2 - 2 - 0.75 = 1.25; returns 3.25
  const index_t cols = 2 * chunk8;
  std::vector<float> r(cols, 100.0f);
  std::vector<float> v(cols, 100.0f);
  std::vector<std::uint8_t> m(cols, 0);
  r[chunk8 - 1] = 2;
  v[chunk8 - 1] = 2;
  m[chunk8 - 1] = 1;
  r[chunk8] = 1;
  v[chunk8] = 4;
  m[chunk8] = 1;
  const auto dr = to_device(r);
  const auto dv = to_device(v);
  const auto dm = to_device(m);
  for (const int cluster : {1, 2, 4}) {
    INFO("cluster ", cluster);
    thrust::device_vector<float> a(cols, 7.0f);
    thrust::device_vector<float> ret(cols, 7.0f);
    auto av = dmat(a, 1, cols);
    auto rv = dmat(ret, 1, cols);
    rlcore::cuda::detail::enqueue_gae(rlcore::cuda::padded(dmat(dm, 1, cols)), dmat(dr, 1, cols),
                                      dmat(dv, 1, cols), av, rv, rlcore::gae_options{0.5, 0.5},
                                      rlcore::device_context{}, gae_launch{8, 1 << 16, cluster});
    const auto ha = to_host(a);
    const auto hret = to_host(ret);
    CHECK(ha[chunk8] == -3.0f);
    CHECK(hret[chunk8] == 1.0f);
    CHECK(ha[chunk8 - 1] == 1.25f);
    CHECK(hret[chunk8 - 1] == 3.25f);
    bool others_zero = true;
    for (index_t t = 0; t < cols; ++t) {
      if (t != chunk8 && t != chunk8 - 1) {
        others_zero = others_zero && ha[t] == 0.0f && hret[t] == 0.0f;
      }
    }
    CHECK(others_zero);
  }
}

TEST_CASE("GAE across CTAs matches the CPU, the same bits for every cluster size and grid") {
  const rlcore::gae_options options{0.99, 0.95};
  // 8192: one round of 4 chunks; 20000: several rounds (partial last); 4100: a partial chunk;
  // 2048 / 2052: one chunk / one chunk + one float4; 2049 (odd T): the shifted path;
  // 12: shorter than one piece row of threads; 4: one float4 per row.
  for (const index_t cols : {index_t{8192}, index_t{20000}, index_t{4100}, index_t{2048},
                             index_t{2052}, index_t{2049}, index_t{12}, index_t{4}}) {
    INFO("T = ", cols);
    const gae_batch b(9, cols, 100 + static_cast<unsigned>(cols));
    check_every_cluster(b, options, 8);
  }
  for (const index_t cols : {4 * chunk16, index_t{9000}}) {
    INFO("T = ", cols);
    const gae_batch b(6, cols, 200 + static_cast<unsigned>(cols));
    check_every_cluster(b, options, 16);
  }
}

TEST_CASE("GAE across CTAs: chunk and piece boundaries at masked tokens, whole masked chunks") {
  const rlcore::gae_options options{0.97, 0.9};
  const index_t cols = 6 * chunk8 + 100; // 4 chunks from the end in the first round of 4 CTAs
  gae_batch b(4, cols, 7, 0.95);
  for (index_t i = 0; i < b.rows; ++i) {
    std::uint8_t* row = &b.mask[i * cols];
    for (index_t k = 0; k <= 6; ++k) { // the tokens on both sides of every chunk boundary
      const index_t boundary = cols - k * chunk8;
      for (index_t t = boundary - 1; t <= boundary; ++t) {
        if (t >= 0 && t < cols) {
          row[t] = 0;
        }
      }
    }
    for (index_t t = cols - 1; t >= 0; t -= 8) { // every piece's last token
      row[t] = i == 0 ? 0 : row[t];
    }
  }
  // Row 1: the whole second and fourth chunks from the end masked (their CTAs pass the carry).
  for (index_t t = cols - 2 * chunk8; t < cols - chunk8; ++t) {
    b.mask[1 * cols + t] = 0;
  }
  for (index_t t = cols - 4 * chunk8; t < cols - 3 * chunk8; ++t) {
    b.mask[1 * cols + t] = 0;
  }
  check_every_cluster(b, options, 8);
}

TEST_CASE("GAE across CTAs: many rows x long rows, bitwise repeatable across streams and runs") {
  const rlcore::gae_options options{0.999, 0.97};
  const gae_batch b(300, 3 * chunk8 + 512, 31);
  std::vector<double> ha;
  std::vector<double> hret;
  cpu_gae(b, options, ha, hret);
  const gae_outputs reference = gpu_gae(b, options, gae_launch{});
  CHECK(scaled_error(reference.advantages, ha) < 1e-6);
  CHECK(scaled_error(reference.returns, hret) < 1e-6);
  CHECK(masked_slots_zero(b, reference));
  cudaStream_t stream{};
  RLCORE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const int cluster : {1, 2, 4, 8}) {
    for (int run = 0; run < 2; ++run) {
      INFO("cluster ", cluster, ", run ", run);
      const gae_outputs out = gpu_gae(b, options, gae_launch{8, 1 << 16, cluster}, stream);
      CHECK(bitwise_equal(out.advantages, reference.advantages));
      CHECK(bitwise_equal(out.returns, reference.returns));
    }
  }
  RLCORE_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE(
    "GAE across CTAs on a packed batch matches the CPU, the same bits for every cluster size") {
  // Lengths 0, 1, around one chunk, one round of 4 chunks and several rounds.
  const std::vector<index_t> lengths{0, 1, 2047, 2048, 2049, 8192, 8193, 3, 17000};
  const index_t n = static_cast<index_t>(lengths.size());
  const index_t cols = 17000;
  std::vector<index_t> offsets{0};
  for (const index_t len : lengths) {
    offsets.push_back(offsets.back() + len);
  }
  const index_t total = offsets.back();
  gae_batch twin(n, cols, 41);
  std::fill(twin.mask.begin(), twin.mask.end(), 0);
  const auto flat_r = uniform<float>(total, -1, 1, 42);
  const auto flat_v = uniform<float>(total, -1, 1, 43);
  const auto flat_m = bernoulli<std::uint8_t>(total, 0.85, 44);
  for (index_t i = 0; i < n; ++i) {
    for (index_t t = 0; t < lengths[i]; ++t) {
      twin.rewards[i * cols + t] = flat_r[offsets[i] + t];
      twin.values[i * cols + t] = flat_v[offsets[i] + t];
      twin.mask[i * cols + t] = flat_m[offsets[i] + t];
    }
  }
  const rlcore::gae_options options{0.9, 0.8};
  std::vector<double> ha;
  std::vector<double> hret;
  cpu_gae(twin, options, ha, hret);
  const auto doff = to_device(offsets);
  const auto dfr = to_device(flat_r);
  const auto dfv = to_device(flat_v);
  const auto dfm = to_device(flat_m);
  std::vector<float> first_a;
  for (const int cluster : {0, 1, 2, 4, 8}) {
    INFO("cluster ", cluster);
    thrust::device_vector<float> fa(total, 9.0f);
    thrust::device_vector<float> fret(total, 9.0f);
    rlcore::cuda::detail::enqueue_gae(rlcore::cuda::packed(doff, dfm), dfr, dfv, fa, fret, options,
                                      rlcore::device_context{}, gae_launch{8, 1 << 16, cluster});
    const auto a = to_host(fa);
    const auto ret = to_host(fret);
    double err = 0;
    for (index_t i = 0; i < n; ++i) {
      for (index_t t = 0; t < lengths[i]; ++t) {
        err = std::max(err, std::abs(double(a[offsets[i] + t]) - ha[i * cols + t]));
        err = std::max(err, std::abs(double(ret[offsets[i] + t]) - hret[i * cols + t]));
      }
    }
    CHECK(err < 1e-5); // |A| up to ~10: 1e-6 relative
    if (first_a.empty()) {
      first_a = a;
    }
    CHECK(bitwise_equal(a, first_a));
  }
}

TEST_CASE("GAE across CTAs without a mask: every token valid, aligned and shifted 16-byte paths") {
  // padded_unmasked: the 16-byte path reads no mask (tokens before the row start are the only
  // invalid ones); T = 4101 takes the shifted path. The reference is the CPU GAE over an
  // all-ones mask.
  const rlcore::gae_options options{0.99, 0.95};
  for (const index_t cols : {index_t{8192}, index_t{4100}, index_t{4101}, index_t{4}}) {
    INFO("T = ", cols);
    gae_batch b(5, cols, 300 + static_cast<unsigned>(cols));
    std::fill(b.mask.begin(), b.mask.end(), std::uint8_t{1});
    std::vector<double> ha;
    std::vector<double> hret;
    cpu_gae(b, options, ha, hret);
    const auto dr = to_device(b.rewards);
    const auto dv = to_device(b.values);
    std::vector<float> first_a;
    for (const int cluster : {1, 2, 4, 8}) {
      INFO("cluster ", cluster);
      thrust::device_vector<float> da(b.rows * cols, 9.0f);
      thrust::device_vector<float> dret(b.rows * cols, 9.0f);
      auto av = dmat(da, b.rows, cols);
      auto rv = dmat(dret, b.rows, cols);
      rlcore::cuda::detail::enqueue_gae(rlcore::cuda::padded_unmasked(b.rows, cols),
                                        dmat(dr, b.rows, cols), dmat(dv, b.rows, cols), av, rv,
                                        options, rlcore::device_context{},
                                        gae_launch{8, 1 << 16, cluster});
      const auto a = to_host(da);
      const auto ret = to_host(dret);
      CHECK(scaled_error(a, ha) < 1e-6);
      CHECK(scaled_error(ret, hret) < 1e-6);
      if (first_a.empty()) {
        first_a = a;
      }
      CHECK(bitwise_equal(a, first_a));
    }
  }
}

TEST_CASE("GAE across CTAs: multi-turn rows whose valid spans straddle chunks and pieces") {
  // Turns of 37 valid tokens separated by 23 masked observation tokens (the carries pass through
  // the observations), rows of 3 chunks + 52 tokens; one row whose only valid span sits across
  // the boundary of its last chunk, one whose first (partial) chunk is wholly masked.
  const rlcore::gae_options options{0.995, 0.9};
  const index_t cols = 3 * chunk8 + 52;
  gae_batch b(6, cols, 77, 1.0);
  for (index_t i = 0; i < b.rows; ++i) {
    for (index_t t = 0; t < cols; ++t) {
      const index_t turn_position = (t + 11 * i) % 60;
      b.mask[i * cols + t] = turn_position < 37 ? 1 : 0;
    }
  }
  for (index_t t = 0; t < cols; ++t) {
    const index_t boundary = cols - chunk8;
    b.mask[4 * cols + t] = t >= boundary - 5 && t < boundary + 5 ? 1 : 0;
    b.mask[5 * cols + t] = t < cols - 3 * chunk8 ? 0 : b.mask[5 * cols + t];
  }
  check_every_cluster(b, options, 8);
  check_every_cluster(b, options, 16);
}

TEST_CASE("GAE across CTAs: row starts inside a warp's span of coalesced groups") {
  // A warp's tokens are Items / 4 groups of 128 tokens (lane l holds 4 consecutive tokens of
  // each, groups 128 apart), so a row that starts inside a chunk leaves some lanes with one group
  // inside the row and one before it: T = chunk + 128 + 4 (one float4 of a group past the warp
  // span's start), chunk + 256 - 4, 132, 252, 260 and, for 16 tokens per thread, 3 x 128 + 4.
  const rlcore::gae_options options{0.98, 0.9};
  for (const index_t cols :
       {chunk8 + 132, chunk8 + 252, index_t{132}, index_t{252}, index_t{260}}) {
    INFO("T = ", cols);
    const gae_batch b(5, cols, 500 + static_cast<unsigned>(cols));
    check_every_cluster(b, options, 8);
  }
  for (const index_t cols : {index_t{388}, chunk16 + 260}) {
    INFO("T = ", cols);
    const gae_batch b(5, cols, 600 + static_cast<unsigned>(cols));
    check_every_cluster(b, options, 16);
  }
}

TEST_CASE("GAE across CTAs: rows of many rounds taken in turn by few clusters") {
  // Rows of 1, 2, 3 and 7 rounds of 2 CTAs (and partial ones), 40 rows taken in turn by 1, 3 or
  // 40 clusters of 2 / 4 CTAs: each CTA prefetches its next round across rounds and rows and the
  // exchange slots and barriers are reused round after round. Against the CPU, masked slots 0,
  // and the same bits for every cluster size and grid.
  const rlcore::gae_options options{0.995, 0.95};
  for (const index_t cols : {2 * chunk8, 4 * chunk8, 6 * chunk8 + 4, 14 * chunk8 - 8}) {
    INFO("T = ", cols);
    const gae_batch b(40, cols, 700 + static_cast<unsigned>(cols), 0.9);
    std::vector<double> ha;
    std::vector<double> hret;
    cpu_gae(b, options, ha, hret);
    const gae_outputs reference = gpu_gae(b, options, gae_launch{8, 1 << 16, 1});
    CHECK(scaled_error(reference.advantages, ha) < 1e-6);
    CHECK(scaled_error(reference.returns, hret) < 1e-6);
    CHECK(masked_slots_zero(b, reference));
    for (const int cluster : {2, 4}) {
      for (const index_t max_blocks : {index_t{cluster}, index_t{3 * cluster}, index_t{1} << 16}) {
        INFO("cluster ", cluster, ", max blocks ", max_blocks);
        const gae_outputs out = gpu_gae(b, options, gae_launch{8, max_blocks, cluster});
        CHECK(bitwise_equal(out.advantages, reference.advantages));
        CHECK(bitwise_equal(out.returns, reference.returns));
      }
    }
  }
}

TEST_CASE("GAE across CTAs: edge parameters of the one-number carry (gamma or lambda 0 or 1)") {
  // lambda = 0: the carry is V_t alone (A_t = delta_t); gamma = 0: A_t = r_t - V_t; gamma lambda
  // = 0 makes every multiplier of the scan 0; gamma = lambda = 1: multipliers stay 1 (undiscounted
  // sums over two rounds of a 2-CTA cluster).
  const gae_batch b(5, 3 * chunk8 + 12, 77);
  for (const auto& options : {rlcore::gae_options{0.99, 0.0}, rlcore::gae_options{0.0, 0.95},
                              rlcore::gae_options{0.0, 0.0}, rlcore::gae_options{1.0, 1.0}}) {
    INFO("gamma ", options.gamma, ", lambda ", options.lambda);
    check_every_cluster(b, options, 8);
  }
}

TEST_CASE("GAE launch: the cluster size chosen by batch shape (host rule, H200-sized device)") {
  using rlcore::cuda::detail::gae_auto_cluster;
  constexpr index_t chunk = 256 * 8;
  constexpr index_t sms = 132;
  constexpr index_t resident = 528;
  // The sizes measured best for 2^21 tokens (docs/benchmarks.md): at least 1.5 CTAs per SM.
  CHECK(gae_auto_cluster(16, 131072, chunk, sms, resident) == 8);
  CHECK(gae_auto_cluster(32, 65536, chunk, sms, resident) == 8);
  CHECK(gae_auto_cluster(64, 32768, chunk, sms, resident) == 4);
  CHECK(gae_auto_cluster(128, 16384, chunk, sms, resident) == 2);
  CHECK(gae_auto_cluster(192, 10922, chunk, sms, resident) == 2);
  CHECK(gae_auto_cluster(256, 8192, chunk, sms, resident) == 1);
  CHECK(gae_auto_cluster(2048, 1024, chunk, sms, resident) == 1);
  // Capped: every CTA busy in a mean row (16 rows of 4096 tokens: 2 chunks), all CTAs resident.
  CHECK(gae_auto_cluster(16, 4096, chunk, sms, resident) == 2);
  CHECK(gae_auto_cluster(16, 2048, chunk, sms, resident) == 1);
  CHECK(gae_auto_cluster(64, 32768, chunk, sms, 200) == 2);
  CHECK(gae_auto_cluster(1, 1 << 20, chunk, sms, resident) == 8);
}

namespace {

/// The fused GAE on `b` with every per-token tensor and the mask in its own allocation of exactly
/// shift + (N - 1) pitch + T elements, the view starting `shift` elements in, rows `pitch` apart
/// (the last row ends at the allocation's end); the outputs' other elements pre-filled with 9.
/// Returns the N x T outputs; `untouched` tells whether every output element outside the view
/// still holds 9.
struct placed_views {
  int shift[5]; ///< elements before the view: rewards, values, mask, advantages, returns
  index_t pitch;
};
gae_outputs gpu_gae_placed(const gae_batch& b, const rlcore::gae_options& options,
                           const gae_launch& launch, const placed_views& place, bool masked,
                           bool& untouched) {
  const index_t n = b.rows;
  const index_t cols = b.cols;
  const auto size = [&](int k) { return place.shift[k] + (n - 1) * place.pitch + cols; };
  const auto at = [&](int k, index_t i, index_t t) { return place.shift[k] + i * place.pitch + t; };
  const auto spread = [&](const auto& dense, int k, auto fill) {
    std::vector<std::decay_t<decltype(dense[0])>> out(static_cast<std::size_t>(size(k)), fill);
    for (index_t i = 0; i < n; ++i) {
      for (index_t t = 0; t < cols; ++t) {
        out[at(k, i, t)] = dense[i * cols + t];
      }
    }
    return out;
  };
  const auto dr = to_device(spread(b.rewards, 0, 7.0f));
  const auto dv = to_device(spread(b.values, 1, 7.0f));
  const auto dm = to_device(spread(b.mask, 2, std::uint8_t{1}));
  thrust::device_vector<float> da(size(3), 9.0f);
  thrust::device_vector<float> dret(size(4), 9.0f);
  const auto view = [&](auto& d, int k) {
    return rlcore::matrix_view<
        std::remove_reference_t<decltype(*thrust::raw_pointer_cast(d.data()))>, device_space>{
        thrust::raw_pointer_cast(d.data()) + place.shift[k], n, cols, place.pitch, 1};
  };
  auto av = view(da, 3);
  auto rv = view(dret, 4);
  const auto layout =
      masked ? rlcore::cuda::padded(view(dm, 2)) : rlcore::cuda::padded_unmasked(n, cols);
  rlcore::cuda::detail::enqueue_gae(layout, view(dr, 0), view(dv, 1), av, rv, options,
                                    rlcore::device_context{}, launch);
  RLCORE_CUDA_CHECK(cudaDeviceSynchronize());
  const auto ha = to_host(da);
  const auto hret = to_host(dret);
  gae_outputs out{std::vector<float>(n * cols), std::vector<float>(n * cols)};
  std::vector<char> inside(static_cast<std::size_t>(size(3)), 0);
  std::vector<char> inside_ret(static_cast<std::size_t>(size(4)), 0);
  for (index_t i = 0; i < n; ++i) {
    for (index_t t = 0; t < cols; ++t) {
      out.advantages[i * cols + t] = ha[at(3, i, t)];
      out.returns[i * cols + t] = hret[at(4, i, t)];
      inside[at(3, i, t)] = 1;
      inside_ret[at(4, i, t)] = 1;
    }
  }
  untouched = true;
  for (std::size_t k = 0; k < ha.size(); ++k) {
    untouched = untouched && (inside[k] != 0 || ha[k] == 9.0f);
  }
  for (std::size_t k = 0; k < hret.size(); ++k) {
    untouched = untouched && (inside_ret[k] != 0 || hret[k] == 9.0f);
  }
  return out;
}

/// Checks `b` placed as `place` (masked or every token valid): the default path (shifted 16-byte
/// accesses for these fp32 views) gives the bits of the per-element path for each cluster size,
/// within 1e-6 of the CPU (scaled), masked slots 0, nothing written outside the views.
void check_placed(gae_batch b, const rlcore::gae_options& options, const placed_views& place,
                  bool masked, int items) {
  if (!masked) {
    std::fill(b.mask.begin(), b.mask.end(), std::uint8_t{1});
  }
  std::vector<double> ha;
  std::vector<double> hret;
  cpu_gae(b, options, ha, hret);
  bool untouched = false;
  const gae_outputs element =
      gpu_gae_placed(b, options, gae_launch{items, 1 << 16, 1, 1}, place, masked, untouched);
  CHECK(untouched);
  CHECK(scaled_error(element.advantages, ha) < 1e-6);
  CHECK(scaled_error(element.returns, hret) < 1e-6);
  CHECK(masked_slots_zero(b, element));
  // (cluster, CTA cap): a CTA per row, or 2 CTAs / 2 clusters taking the rows in turn (the
  // next row's first round prefetched during the row's last).
  const int shapes[5][2] = {{1, 1 << 16}, {2, 1 << 16}, {0, 1 << 16}, {1, 2}, {2, 4}};
  for (const auto& shape : shapes) {
    INFO("cluster ", shape[0], ", max blocks ", shape[1]);
    const gae_outputs out =
        gpu_gae_placed(b, options, gae_launch{items, shape[1], shape[0]}, place, masked, untouched);
    CHECK(untouched);
    CHECK(bitwise_equal(out.advantages, element.advantages));
    CHECK(bitwise_equal(out.returns, element.returns));
  }
}

} // namespace

TEST_CASE("GAE shifted 16-byte path: padded rows of any T, the bits of the per-element path") {
  // T not a multiple of 4: rows start at every residue mod 4 (row i at i T); holes, an all-masked
  // row, a one-token row, a ragged end (gae_batch), and every token valid. The last row ends at
  // the allocation's end (memcheck: no 16-byte load past it).
  const rlcore::gae_options options{0.99, 0.95};
  for (const index_t cols : {index_t{1}, index_t{2}, index_t{3}, index_t{5}, index_t{127},
                             index_t{129}, index_t{2047}, index_t{2049}, index_t{8191}}) {
    for (const index_t rows : {index_t{1}, index_t{7}}) {
      INFO("T = ", cols, ", rows ", rows);
      const gae_batch b(rows, cols, 900 + static_cast<unsigned>(cols + rows), 0.8);
      const placed_views dense{{0, 0, 0, 0, 0}, cols};
      check_placed(b, options, dense, true, 8);
      check_placed(b, options, dense, false, 8);
    }
  }
  for (const index_t cols : {index_t{4095}, index_t{9001}}) {
    INFO("T = ", cols, ", 16 tokens per thread");
    const gae_batch b(5, cols, 950 + static_cast<unsigned>(cols), 0.85);
    check_placed(b, options, placed_views{{0, 0, 0, 0, 0}, cols}, true, 16);
  }
}

TEST_CASE("GAE shifted 16-byte path: sub-views 1-3 elements into their allocations, row pitch") {
  // Each tensor and the mask at its own offset from an aligned allocation (so the rows of one
  // token differ in their position in the float4), rows T or T + 1..3 elements apart; T a
  // multiple of 4 too (aligned rows but a misaligned start: the shifted path, not the aligned).
  const rlcore::gae_options options{0.98, 0.9};
  for (const index_t cols : {index_t{4100}, index_t{2049}, index_t{6}, index_t{260}}) {
    for (const int d : {1, 2, 3}) {
      for (const index_t extra : {index_t{0}, index_t{1}, index_t{3}}) {
        INFO("T = ", cols, ", shift ", d, ", pitch T + ", extra);
        const gae_batch b(6, cols, 1000 + static_cast<unsigned>(cols + d + extra), 0.8);
        const placed_views place{{d, (d + 1) % 4, (d + 2) % 4, (d + 3) % 4, d}, cols + extra};
        check_placed(b, options, place, true, 8);
        if (extra == 1) {
          check_placed(b, options, place, false, 8);
        }
      }
    }
  }
}

TEST_CASE("GAE shifted 16-byte path on aligned rows: the bits of the aligned path") {
  // gae_launch::access = 2 forces the shifted path (o = 0 in every row) on views that the default
  // sends to the aligned one (T a multiple of 4, 16-byte aligned rows).
  const rlcore::gae_options options{0.99, 0.95};
  for (const index_t cols : {index_t{8192}, index_t{4100}, index_t{12}}) {
    INFO("T = ", cols);
    const gae_batch b(9, cols, 1100 + static_cast<unsigned>(cols));
    const gae_outputs aligned = gpu_gae(b, options, gae_launch{8, 1 << 16, 1});
    for (const int cluster : {1, 2}) {
      const gae_outputs shifted = gpu_gae(b, options, gae_launch{8, 1 << 16, cluster, 2});
      const gae_outputs element = gpu_gae(b, options, gae_launch{8, 1 << 16, cluster, 1});
      CHECK(bitwise_equal(shifted.advantages, aligned.advantages));
      CHECK(bitwise_equal(shifted.returns, aligned.returns));
      CHECK(bitwise_equal(element.advantages, aligned.advantages));
      CHECK(bitwise_equal(element.returns, aligned.returns));
    }
  }
}

TEST_CASE("GAE shifted 16-byte path on packed rows at every offset mod 4, empty rows") {
  // Row lengths that put the row starts at every residue mod 4, empty rows among them; the flat
  // buffers start 0..3 elements into their allocations and end at the allocation's end. The
  // default (shifted) against the per-element path (bits), the CPU and untouched slack.
  const std::vector<index_t> lengths{0,    1, 2, 3,    5, 0,    127, 129, 2047,
                                     2049, 0, 6, 8191, 7, 4096, 3,   0};
  const index_t n = static_cast<index_t>(lengths.size());
  const index_t cols = 8191;
  std::vector<index_t> offsets{0};
  for (const index_t len : lengths) {
    offsets.push_back(offsets.back() + len);
  }
  const index_t total = offsets.back();
  const auto flat_r = uniform<float>(total, -1, 1, 1201);
  const auto flat_v = uniform<float>(total, -1, 1, 1202);
  const auto flat_m = bernoulli<std::uint8_t>(total, 0.85, 1203);
  const auto doff = to_device(offsets);
  const rlcore::gae_options options{0.9, 0.8};
  for (const bool masked : {true, false}) {
    gae_batch twin(n, cols, 1204);
    std::fill(twin.mask.begin(), twin.mask.end(), std::uint8_t{0});
    for (index_t i = 0; i < n; ++i) {
      for (index_t t = 0; t < lengths[i]; ++t) {
        twin.rewards[i * cols + t] = flat_r[offsets[i] + t];
        twin.values[i * cols + t] = flat_v[offsets[i] + t];
        twin.mask[i * cols + t] = masked ? flat_m[offsets[i] + t] : std::uint8_t{1};
      }
    }
    std::vector<double> ha;
    std::vector<double> hret;
    cpu_gae(twin, options, ha, hret);
    for (const int d : {0, 1, 2, 3}) {
      const int shift[5] = {d, (d + 1) % 4, (d + 2) % 4, (d + 3) % 4, (d + 2) % 4};
      const auto placed = [&](const auto& x, int k, auto fill) {
        std::vector<std::decay_t<decltype(x[0])>> y(static_cast<std::size_t>(shift[k]), fill);
        y.insert(y.end(), x.begin(), x.end());
        return to_device(y);
      };
      const auto dr = placed(flat_r, 0, 7.0f);
      const auto dv = placed(flat_v, 1, 7.0f);
      const auto dm = placed(flat_m, 2, std::uint8_t{1});
      const auto flat = [&](auto& x, int k) {
        return rlcore::make_vector_view<device_space>(thrust::raw_pointer_cast(x.data()) + shift[k],
                                                      total);
      };
      std::vector<float> element_a;
      std::vector<float> element_ret;
      const int shapes[5][2] = {{1, 1 << 16}, {2, 1 << 16}, {0, 1 << 16}, {1, 3}, {2, 2}};
      for (const int access : {1, 0}) {
        for (const auto& shape : shapes) {
          const int cluster = shape[0];
          INFO("masked ", masked, ", shift ", d, ", access ", access, ", cluster ", cluster,
               ", max blocks ", shape[1]);
          thrust::device_vector<float> fa(shift[3] + total, 9.0f);
          thrust::device_vector<float> fret(shift[4] + total, 9.0f);
          auto av = flat(fa, 3);
          auto rv = flat(fret, 4);
          const gae_launch launch{8, shape[1], cluster, access};
          if (masked) {
            rlcore::cuda::detail::enqueue_gae(rlcore::cuda::packed(doff, flat(dm, 2)), flat(dr, 0),
                                              flat(dv, 1), av, rv, options,
                                              rlcore::device_context{}, launch);
          } else {
            rlcore::cuda::detail::enqueue_gae(rlcore::cuda::packed(doff), flat(dr, 0), flat(dv, 1),
                                              av, rv, options, rlcore::device_context{}, launch);
          }
          const auto a = to_host(fa);
          const auto ret = to_host(fret);
          bool untouched = true;
          for (int k = 0; k < shift[3]; ++k) {
            untouched = untouched && a[k] == 9.0f;
          }
          for (int k = 0; k < shift[4]; ++k) {
            untouched = untouched && ret[k] == 9.0f;
          }
          CHECK(untouched);
          const std::vector<float> va(a.begin() + shift[3], a.end());
          const std::vector<float> vret(ret.begin() + shift[4], ret.end());
          double err = 0;
          bool zeros = true;
          for (index_t i = 0; i < n; ++i) {
            for (index_t t = 0; t < lengths[i]; ++t) {
              const index_t k = offsets[i] + t;
              err = std::max(err, std::abs(double(va[k]) - ha[i * cols + t]));
              err = std::max(err, std::abs(double(vret[k]) - hret[i * cols + t]));
              zeros = zeros && (twin.mask[i * cols + t] != 0 || (va[k] == 0.0f && vret[k] == 0.0f));
            }
          }
          CHECK(err < 1e-5); // |A| up to ~10: 1e-6 relative
          CHECK(zeros);
          if (element_a.empty()) {
            element_a = va;
            element_ret = vret;
          }
          CHECK(bitwise_equal(va, element_a));
          CHECK(bitwise_equal(vret, element_ret));
        }
      }
    }
  }
}

TEST_CASE("GAE as a programmatic dependent: sees the previous kernel's writes, the next its own") {
  // The rewards are written by a kernel that lets its dependent start and then spins ~1 ms; GAE
  // (a programmatic dependent on sm_90) must see them: one block per row and the default shape
  // (4-CTA clusters for 64 rows). A second GAE, also a dependent, takes the first one's advantages
  // as its rewards and writes over its returns. This checks the results of dependent launches; it
  // does not catch a missing wait in the GAE kernel on the H200 (measured with the wait removed:
  // GAE was not scheduled before the producer ended, and GAE lets its own dependents start only
  // as its CTAs exit), unlike the objective's test in test_fused.cu.
  const rlcore::gae_options options{0.99, 0.95};
  const gae_batch b(64, 8192, 91);
  const index_t n = b.rows * b.cols;
  const auto dmask = to_device(b.mask);
  const auto source = to_device(b.rewards);
  const auto dv = to_device(b.values);
  std::vector<double> ha;
  std::vector<double> hret;
  cpu_gae(b, options, ha, hret);
  cudaStream_t stream{};
  RLCORE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const rlcore::device_context c{stream};
  const auto layout = rlcore::cuda::padded(dmat(dmask, b.rows, b.cols));
  for (const gae_launch& launch : {gae_launch{8, 1 << 16, 1}, gae_launch{}}) {
    INFO("cluster ", launch.cluster);
    thrust::device_vector<float> dr(n, 0.0f);
    thrust::device_vector<float> da(n, 9.0f);
    thrust::device_vector<float> dret(n, 9.0f);
    thrust::device_vector<float> da2(n, 9.0f);
    enqueue_delayed_copy(thrust::raw_pointer_cast(dr.data()),
                         thrust::raw_pointer_cast(source.data()), n, 2000000, stream);
    RLCORE_CUDA_CHECK(cudaGetLastError());
    auto av = dmat(da, b.rows, b.cols);
    auto rv = dmat(dret, b.rows, b.cols);
    rlcore::cuda::detail::enqueue_gae(layout, dmat(dr, b.rows, b.cols), dmat(dv, b.rows, b.cols),
                                      av, rv, options, c, launch);
    auto av2 = dmat(da2, b.rows, b.cols);
    rlcore::cuda::detail::enqueue_gae(layout, dmat(da, b.rows, b.cols), dmat(dv, b.rows, b.cols),
                                      av2, rv, options, c, launch);
    RLCORE_CUDA_CHECK(cudaStreamSynchronize(stream));
    const auto first = to_host(da);
    CHECK(scaled_error(first, ha) < 1e-6);
    gae_batch second = b;
    second.rewards = first;
    std::vector<double> ha2;
    std::vector<double> hret2;
    cpu_gae(second, options, ha2, hret2);
    CHECK(scaled_error(to_host(da2), ha2) < 1e-6);
    CHECK(scaled_error(to_host(dret), hret2) < 1e-6);
  }
  RLCORE_CUDA_CHECK(cudaStreamDestroy(stream));
}
