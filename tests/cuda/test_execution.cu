// execution_context<device_space>: every primitive against plain host loops, padded and packed
// layouts, determinism, device-side layout validation and CUDA error reporting.
#include "../common/matrix_monoid.hpp"
#include "cuda_test_util.cuh"

#include <rlcore/backend/host/execution.hpp>

#include <cmath>
#include <cstdint>

using rlcore::device_space;
using rlcore::index_t;
using namespace rlcore_test;

namespace {

rlcore::device_context ctx{};

struct affine_index {
  double* out;
  RLCORE_HD void operator()(index_t i) const { out[i] = 2.0 * static_cast<double>(i) + 1.0; }
};

struct index_value {
  RLCORE_HD double operator()(index_t i) const { return static_cast<double>(i); }
};

struct read_float {
  const float* x;
  RLCORE_HD float operator()(index_t i) const { return x[i]; }
};

/// A struct accumulator: what an objective's metrics look like.
struct sum_and_count {
  double sum = 0;
  long long count = 0;
  RLCORE_HD sum_and_count& operator+=(const sum_and_count& o) {
    sum += o.sum;
    count += o.count;
    return *this;
  }
};

template <class Layout, class X>
struct masked_value {
  Layout layout;
  X x;
  RLCORE_HD sum_and_count operator()(index_t i, index_t t) const {
    if (!layout.valid(i, t)) {
      return {};
    }
    return {static_cast<double>(x(i, t)), 1};
  }
};

template <class X, class Y>
struct write_twice {
  X x;
  Y y;
  RLCORE_HD void operator()(index_t i, index_t t) const { y(i, t) = 2.0f * x(i, t); }
};

template <class X>
struct token_value {
  X x;
  RLCORE_HD double operator()(index_t i, index_t t) const { return static_cast<double>(x(i, t)); }
};

/// GAE-like coefficients (a, b) = (gamma_lambda * m, x) on valid tokens, (1, 0) at masked ones.
template <class Layout, class X>
struct affine_coeff {
  Layout layout;
  X x;
  float decay;
  struct pair {
    float first;
    float second;
  };
  RLCORE_HD pair operator()(index_t i, index_t t) const {
    return layout.valid(i, t) ? pair{decay, x(i, t)} : pair{1.0f, 0.0f};
  }
};

template <class Y>
struct store_carries {
  Y before;
  Y after;
  RLCORE_HD void operator()(index_t i, index_t t, float c, float c_new) const {
    before(i, t) = c;
    after(i, t) = c_new;
  }
};

} // namespace

TEST_CASE("for_each and reduce over indices") {
  const index_t n = 1000003; // not a multiple of the block
  thrust::device_vector<double> out(n, -1.0);
  ctx.for_each(n, affine_index{thrust::raw_pointer_cast(out.data())});
  const auto h = to_host(out);
  bool all = true;
  for (index_t i = 0; i < n; ++i) {
    all = all && h[i] == 2.0 * i + 1.0;
  }
  CHECK(all);
  // sum_{i<n} i = n (n - 1) / 2 exactly in double (< 2^53), plus init.
  const double total = ctx.reduce(n, 5.0, index_value{});
  CHECK(total == 5.0 + static_cast<double>(n) * (n - 1) / 2);
  CHECK(ctx.reduce(0, 3.5, index_value{}) == 3.5); // empty: init
}

TEST_CASE("reduce: fp32 sums are bitwise identical run to run and match a double sum") {
  const std::size_t n = (1u << 22) + 17;
  const auto x = uniform<float>(n, -1.0, 1.0, 7);
  const auto d = to_device(x);
  const read_float f{thrust::raw_pointer_cast(d.data())};
  const float first = ctx.reduce(static_cast<index_t>(n), 0.0f, f);
  const float second = ctx.reduce(static_cast<index_t>(n), 0.0f, f);
  CHECK(std::memcmp(&first, &second, sizeof(float)) == 0);
  double reference = 0;
  double magnitude = 0;
  for (float v : x) {
    reference += v;
    magnitude += std::abs(v);
  }
  // fp32 tree sum: error bounded by ~log2(n) * eps * sum|x|.
  CHECK(std::abs(first - reference) <= 1e-6 * magnitude);
}

TEST_CASE("reduce_into: reduce's bits into device memory, asynchronously") {
  const auto x = uniform<float>((1u << 20) + 5, -1.0, 1.0, 9);
  const auto d = to_device(x);
  const read_float f{thrust::raw_pointer_cast(d.data())};
  for (const index_t n : {index_t{0}, index_t{1}, index_t{255}, index_t{257}, index_t{1} << 20}) {
    INFO("n = ", n);
    thrust::device_vector<float> partials(static_cast<std::size_t>(
        rlcore::device_context::reduce_partials(n) > 0 ? rlcore::device_context::reduce_partials(n)
                                                       : 1));
    thrust::device_vector<float> out(1, -7.0f);
    ctx.reduce_into(n, thrust::raw_pointer_cast(d.data()),
                    thrust::raw_pointer_cast(partials.data()),
                    thrust::raw_pointer_cast(out.data()));
    const float into = 0.0f + to_host(out)[0];
    const float reduced = ctx.reduce(n, 0.0f, f);
    CHECK(std::memcmp(&into, &reduced, sizeof(float)) == 0);
  }
  CHECK(rlcore::device_context::reduce_partials(0) == 0);
  CHECK(rlcore::device_context::reduce_partials(1) == 1);
  CHECK(rlcore::device_context::reduce_partials(index_t{1} << 30) == 1024);
}

TEST_CASE("padded layout: for_each_token, reduce_tokens and reduce_rows honour the mask") {
  const index_t rows = 37;
  const index_t cols = 1031;
  const auto x = uniform<float>(rows * cols, -2.0, 2.0, 11);
  auto mask = bernoulli<std::uint8_t>(rows * cols, 0.7, 12);
  for (index_t t = 0; t < cols; ++t) {
    mask[5 * cols + t] = 0; // an all-masked row
  }
  const auto dx = to_device(x);
  const auto dmask = to_device(mask);
  thrust::device_vector<float> dy(rows * cols, -7.0f);
  auto layout = rlcore::cuda::padded(
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(dmask.data()), rows, cols));
  auto xview =
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(dx.data()), rows, cols);
  auto xv = layout.bind("test", "x", xview);
  auto yview =
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(dy.data()), rows, cols);
  auto yv = layout.bind("test", "y", yview);

  ctx.for_each_token(layout, write_twice<decltype(xv), decltype(yv)>{xv, yv});
  const auto y = to_host(dy);
  bool all = true;
  for (index_t k = 0; k < rows * cols; ++k) {
    all = all && y[k] == 2.0f * x[k]; // every slot, valid or not
  }
  CHECK(all);

  using F = masked_value<decltype(layout), decltype(xv)>;
  const auto total = ctx.reduce_tokens(layout, sum_and_count{0.5, 1}, F{layout, xv});
  double reference = 0.5;
  long long count = 1;
  std::vector<double> row_sums(rows, 0.0);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t t = 0; t < cols; ++t) {
      if (mask[i * cols + t] != 0) {
        reference += x[i * cols + t];
        row_sums[i] += x[i * cols + t];
        ++count;
      }
    }
  }
  CHECK(total.count == count);
  CHECK(close(total.sum, reference, 1e-12));

  thrust::device_vector<sum_and_count> per_row(rows);
  ctx.reduce_rows(layout, thrust::raw_pointer_cast(per_row.data()), F{layout, xv});
  const auto rows_host = to_host(per_row);
  for (index_t i = 0; i < rows; ++i) {
    CHECK(close(rows_host[i].sum, row_sums[i], 1e-12));
  }
  CHECK(rows_host[5].count == 0);
  CHECK(rows_host[5].sum == 0.0);
}

TEST_CASE("packed layout with empty rows: every token visited once, rows reduced") {
  // Rows of length 3, 0, 1, 0, 2600, 5 (the long one spans several blocks of 256).
  const std::vector<std::int32_t> offsets{0, 3, 3, 4, 4, 2604, 2609};
  const index_t total = 2609;
  const auto x = uniform<float>(total, 0.0, 1.0, 21);
  const auto dx = to_device(x);
  const auto doff = to_device(offsets);
  auto layout = rlcore::cuda::packed(doff);
  CHECK(layout.rows() == 6);
  CHECK(layout.token_slots() == total);
  auto xv = layout.bind("test", "x", dx);
  thrust::device_vector<double> row_sums(6, -1.0);
  ctx.reduce_rows(layout, thrust::raw_pointer_cast(row_sums.data()), token_value<decltype(xv)>{xv});
  const auto h = to_host(row_sums);
  for (int i = 0; i < 6; ++i) {
    double s = 0;
    for (int k = offsets[i]; k < offsets[i + 1]; ++k) {
      s += x[k];
    }
    CHECK(close(h[i], s, 1e-12));
  }
  CHECK(h[1] == 0.0);
  CHECK(h[3] == 0.0);
  // reduce_tokens visits each token exactly once: sum of (i + 1) * 1000 + t identifies it.
  double reference = 0;
  for (int i = 0; i < 6; ++i) {
    for (int k = offsets[i]; k < offsets[i + 1]; ++k) {
      reference += x[k];
    }
  }
  CHECK(close(ctx.reduce_tokens(layout, 0.0, token_value<decltype(xv)>{xv}), reference, 1e-12));
}

namespace {

/// Runs the scan over a rows x cols batch (80% valid) and returns the worst relative carry error
/// against a sequential double loop; checks bitwise determinism on the way.
double scan_error(index_t rows, index_t cols) {
  const auto x = uniform<float>(rows * cols, -1.0, 1.0, 31);
  auto mask = bernoulli<float>(rows * cols, 0.8, 32);
  const auto dx = to_device(x);
  const auto dmask = to_device(mask);
  thrust::device_vector<float> before(rows * cols, -9.0f);
  thrust::device_vector<float> after(rows * cols, -9.0f);
  auto layout = rlcore::cuda::padded(
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(dmask.data()), rows, cols));
  auto xm = rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(dx.data()), rows, cols);
  auto bm =
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(before.data()), rows, cols);
  auto am =
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(after.data()), rows, cols);
  const float decay = 0.99f * 0.95f;
  ctx.reverse_affine_scan_rows(layout,
                               affine_coeff<decltype(layout), decltype(xm)>{layout, xm, decay},
                               store_carries<decltype(bm)>{bm, am});
  const auto hb = to_host(before);
  const auto ha = to_host(after);
  double worst = 0;
  for (index_t i = 0; i < rows; ++i) {
    double c = 0;
    for (index_t t = cols - 1; t >= 0; --t) {
      const index_t k = i * cols + t;
      const bool valid = mask[k] != 0;
      const double next = valid ? static_cast<double>(decay) * c + x[k] : c;
      worst = std::max(worst, std::abs(hb[k] - c) / std::max(1.0, std::abs(c)));
      worst = std::max(worst, std::abs(ha[k] - next) / std::max(1.0, std::abs(next)));
      c = next;
    }
  }
  // Bitwise determinism of the scan.
  thrust::device_vector<float> after2(rows * cols, -9.0f);
  auto am2 =
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(after2.data()), rows, cols);
  ctx.reverse_affine_scan_rows(layout,
                               affine_coeff<decltype(layout), decltype(xm)>{layout, xm, decay},
                               store_carries<decltype(bm)>{bm, am2});
  CHECK(bitwise_equal(ha, to_host(after2)));
  return worst;
}

} // namespace

TEST_CASE("reverse_affine_scan_rows: carries match a sequential loop, masks keep the carry") {
  // Few long rows, several tiles of 1024 tokens each.
  CHECK(scan_error(6, 5000) < 1e-5);
  // Many rows: one block per row, several tiles each.
  CHECK(scan_error(520, 2100) < 1e-5);
  // Short rows (one tile) and a single token.
  CHECK(scan_error(3, 1) < 1e-6);
}

namespace {

/// Writes what out sees to slot i * cols + t of two arrays (host or device memory).
struct record_matrices {
  index_t cols;
  mat2* exclusive;
  mat2* inclusive;
  RLCORE_HD void operator()(index_t i, index_t t, const mat2& before, const mat2& total) const {
    exclusive[i * cols + t] = before;
    inclusive[i * cols + t] = total;
  }
};

/// The scan of `device_layout` on the GPU (twice: bitwise the same) against the host loop over
/// `host_layout` (the same rows), slot by slot over an N x cols grid; slots past a row's end must
/// keep their fill value (out called for t < len only).
template <class DeviceLayout, class HostLayout>
bool matrix_scan_matches_host(const DeviceLayout& device_layout, const HostLayout& host_layout,
                              index_t cols) {
  const auto slots = static_cast<std::size_t>(host_layout.rows() * cols);
  const mat2 fill{7, 7, 7, 7};
  std::vector<mat2> host_exclusive(slots, fill);
  std::vector<mat2> host_inclusive(slots, fill);
  rlcore::host_context{}.reverse_scan_rows(
      host_layout, mat2{}, matrix_element{}, matrix_then{},
      record_matrices{cols, host_exclusive.data(), host_inclusive.data()});
  bool ok = true;
  std::vector<mat2> first;
  for (int run = 0; run < 2; ++run) {
    thrust::device_vector<mat2> exclusive(slots, fill);
    thrust::device_vector<mat2> inclusive(slots, fill);
    ctx.reverse_scan_rows(device_layout, mat2{}, matrix_element{}, matrix_then{},
                          record_matrices{cols, thrust::raw_pointer_cast(exclusive.data()),
                                          thrust::raw_pointer_cast(inclusive.data())});
    const auto e = to_host(exclusive);
    const auto in = to_host(inclusive);
    ok = ok && e == host_exclusive && in == host_inclusive;
    if (run == 0) {
      first = in;
    } else {
      ok = ok && in == first;
    }
  }
  return ok;
}

} // namespace

TEST_CASE("reverse_scan_rows: a non-commutative monoid on the GPU gives the host loop's values") {
  // The host loop is itself checked against products written out in
  // tests/advantage/test_scan_rows.cpp; here the GPU's tiles, running prefix and scan order.
  SUBCASE("padded, masked slots included, rows of several tiles (1024 tokens each)") {
    const index_t rows = 5;
    const index_t cols = 5000;
    const auto mask = bernoulli<std::uint8_t>(static_cast<std::size_t>(rows * cols), 0.8, 41);
    const auto dmask = to_device(mask);
    const auto device_layout = rlcore::cuda::padded(dmat(dmask, rows, cols));
    const auto host_layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), rows, cols));
    CHECK(matrix_scan_matches_host(device_layout, host_layout, cols));
  }
  SUBCASE("padded: one token per row, many rows") {
    CHECK(matrix_scan_matches_host(rlcore::padded_unmasked<device_space>(600, 1),
                                   rlcore::padded_unmasked(600, 1), 1));
  }
  SUBCASE("packed: empty, one-token, exactly one tile, one tile + 1, long rows") {
    const std::vector<index_t> lengths{5, 0, 1, 1024, 1025, 0, 3000, 2, 1, 0};
    std::vector<index_t> offsets{0};
    for (index_t len : lengths) {
      offsets.push_back(offsets.back() + len);
    }
    // The packed rows written to a grid of N x 3000 slots (record's i * cols + t).
    const auto device_offsets = to_device(offsets);
    CHECK(matrix_scan_matches_host(rlcore::cuda::packed(device_offsets), rlcore::packed(offsets),
                                   3000));
  }
  SUBCASE("no rows, and only empty rows") {
    const std::vector<index_t> empty{0, 0, 0};
    const auto device_empty = to_device(empty);
    CHECK(matrix_scan_matches_host(rlcore::cuda::packed(device_empty), rlcore::packed(empty), 1));
    const std::vector<index_t> none{0};
    const auto device_none = to_device(none);
    CHECK(matrix_scan_matches_host(rlcore::cuda::packed(device_none), rlcore::packed(none), 1));
  }
}

namespace {

/// Exact affine coefficients: a in {1, -1, 0}, b an integer in [-3, 3] (every carry is a small
/// integer, so every association order gives the same double).
struct integer_affine_coeff {
  struct pair {
    double first;
    double second;
  };
  RLCORE_HD pair operator()(index_t i, index_t t) const {
    const index_t k = i * 131 + t;
    const double a = k % 7 == 0 ? 0.0 : (k % 3 == 0 ? -1.0 : 1.0);
    return {a, static_cast<double>(k % 7) - 3.0};
  }
};

struct store_double_carries {
  index_t cols;
  double* before;
  double* after;
  RLCORE_HD void operator()(index_t i, index_t t, double c, double c_next) const {
    before[i * cols + t] = c;
    after[i * cols + t] = c_next;
  }
};

} // namespace

TEST_CASE("reverse_affine_scan_rows: exact affine maps give the host's carries bit for bit") {
  const index_t rows = 7;
  const index_t cols = 2600;
  const auto slots = static_cast<std::size_t>(rows * cols);
  std::vector<double> hb(slots);
  std::vector<double> ha(slots);
  rlcore::host_context{}.reverse_affine_scan_rows(rlcore::padded_unmasked(rows, cols),
                                                  integer_affine_coeff{},
                                                  store_double_carries{cols, hb.data(), ha.data()});
  thrust::device_vector<double> db(slots, -9.0);
  thrust::device_vector<double> da(slots, -9.0);
  ctx.reverse_affine_scan_rows(rlcore::padded_unmasked<device_space>(rows, cols),
                               integer_affine_coeff{},
                               store_double_carries{cols, thrust::raw_pointer_cast(db.data()),
                                                    thrust::raw_pointer_cast(da.data())});
  CHECK(bitwise_equal(to_host(db), hb));
  CHECK(bitwise_equal(to_host(da), ha));
}

TEST_CASE("allocate and copy_to_host") {
  auto buffer = ctx.allocate<float>(1000);
  CHECK(buffer.size() == 1000);
  std::vector<float> h(1000, 1.0f);
  ctx.copy_to_host(buffer.data(), 1000, h.data());
  CHECK(h[0] == 0.0f); // zero-filled like host_buffer
  CHECK(h[999] == 0.0f);
  static_assert(
      std::same_as<rlcore::memory_space_of<rlcore::cuda::device_buffer<float>>, device_space>);
  static_assert(std::same_as<rlcore::memory_space_of<thrust::device_vector<float>>, device_space>);
}

TEST_CASE("device offsets are validated on the device, with the host messages") {
  const auto not_monotone = to_device(std::vector<index_t>{0, 3, 5, 4, 6, 2});
  check_invalid([&] { (void)rlcore::cuda::packed(not_monotone); }, "offsets",
                "expected non-decreasing offsets, got offsets[2] = 5 > offsets[3] = 4");
  const auto bad_start = to_device(std::vector<index_t>{1, 3});
  check_invalid([&] { (void)rlcore::cuda::packed(bad_start); }, "offsets",
                "expected offsets[0] == 0, got 1");
  const thrust::device_vector<index_t> empty;
  check_invalid([&] { (void)rlcore::cuda::packed(empty); }, "offsets", "at least 1 entry");
  const auto offsets = to_device(std::vector<int>{0, 2, 3});
  const thrust::device_vector<float> short_mask(2, 1.0f);
  check_invalid([&] { (void)rlcore::cuda::packed(offsets, short_mask); }, "mask",
                "expected 3 entries (offsets[N]), got 2");
  const thrust::device_vector<float> mask(3, 1.0f);
  CHECK(rlcore::cuda::packed(offsets, mask).token_slots() == 3);

  const auto group_offs = to_device(std::vector<int>{0, 2, 2, 5});
  auto groups = rlcore::cuda::group_offsets(group_offs);
  CHECK(rlcore::detail::validate_groups("f", groups, 5) == 3);
  check_invalid([&] { (void)rlcore::detail::validate_groups("f", groups, 6); }, "groups",
                "expected the last group offset to equal N = 6, got 5");
  const auto bad_groups = to_device(std::vector<int>{0, 3, 1});
  check_invalid([&] { (void)rlcore::cuda::group_offsets(bad_groups); }, "group_offsets",
                "offsets[1] = 3 > offsets[2] = 1");

  // A tensor bound to a device layout is checked against it like on the host.
  const thrust::device_vector<float> wrong(4);
  auto layout = rlcore::cuda::packed(offsets);
  check_invalid([&] { (void)layout.bind("f", "log_probs", wrong); }, "log_probs",
                "expected 3 packed tokens (offsets[N]), got 4");
}

TEST_CASE("CUDA errors become rlcore::runtime_error naming the call") {
  try {
    RLCORE_CUDA_CHECK(cudaSetDevice(9999));
    FAIL("expected rlcore::runtime_error");
  } catch (const rlcore::runtime_error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("cudaSetDevice(9999)") != std::string::npos);
    CHECK(what.find("cudaErrorInvalidDevice") != std::string::npos);
  }
}
