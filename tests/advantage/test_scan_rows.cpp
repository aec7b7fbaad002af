// execution_context<host_space>::reverse_scan_rows (the monoid scan of the execution contract) and
// reverse_affine_scan_rows on top of it: a non-commutative exact monoid (2 x 2 matrices over the
// integers mod 2^32) against products written out token by token, padded and packed layouts,
// empty and one-token rows, rows longer than a CUDA tile, and exact (dyadic) affine maps.
#include "../common/matrix_monoid.hpp"

#include <rlcore/backend/host/execution.hpp>
#include <rlcore/tensor/layout.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

using rlcore::index_t;
using namespace rlcore_test;

namespace {

/// Records what out sees, per token slot of an N x T grid (packed rows use T = the longest row).
struct record {
  index_t cols;
  std::vector<mat2>* exclusive;
  std::vector<mat2>* inclusive;
  std::vector<int>* calls;
  void operator()(index_t i, index_t t, const mat2& before, const mat2& total) const {
    const auto k = static_cast<size_t>(i * cols + t);
    (*exclusive)[k] = before;
    (*inclusive)[k] = total;
    ++(*calls)[k];
  }
};

/// Runs the scan over `layout` (rows of the given lengths, at most `cols` tokens) and checks every
/// slot against the products written out: exclusive(t) = M_t+1 * ... * M_len-1 (the identity at
/// the row's last token), inclusive(t) = M_t * exclusive(t), one out call per slot, none beyond.
template <class Layout, class Combine = matrix_then>
bool scan_matches_products(const Layout& layout, const std::vector<index_t>& lengths, index_t cols,
                           Combine combine = {}) {
  const auto rows = static_cast<index_t>(lengths.size());
  const auto slots = static_cast<size_t>(rows * cols);
  std::vector<mat2> exclusive(slots);
  std::vector<mat2> inclusive(slots);
  std::vector<int> calls(slots, 0);
  rlcore::host_context{}.reverse_scan_rows(layout, mat2{}, matrix_element{}, combine,
                                           record{cols, &exclusive, &inclusive, &calls});
  bool ok = true;
  for (index_t i = 0; i < rows; ++i) {
    const index_t len = lengths[static_cast<size_t>(i)];
    for (index_t t = 0; t < cols; ++t) {
      const auto k = static_cast<size_t>(i * cols + t);
      if (t >= len) {
        ok = ok && calls[k] == 0;
        continue;
      }
      mat2 after; // M_t+1 * ... * M_len-1, left to right
      for (index_t u = t + 1; u < len; ++u) {
        after = product(after, token_matrix(i, u));
      }
      ok = ok && calls[k] == 1 && exclusive[k] == after
           && inclusive[k] == product(token_matrix(i, t), after);
    }
  }
  return ok;
}

} // namespace

TEST_CASE("reverse_scan_rows: three tokens of a non-commutative monoid, by hand") {
  // Row of A = [[1, 1], [0, 1]], B = [[2, 0], [0, 1]], C = [[1, 0], [3, 1]].
  //   t = 2: exclusive = I, inclusive = C
  //   t = 1: exclusive = C, inclusive = B C = [[2, 0], [3, 1]]
  //   t = 0: exclusive = B C, inclusive = A B C = [[5, 1], [3, 1]]
  // (C B = [[2, 0], [6, 1]] and the other order C B A = [[2, 2], [6, 7]] differ.)
  const std::vector<mat2> row{{1, 1, 0, 1}, {2, 0, 0, 1}, {1, 0, 3, 1}};
  struct from_row {
    const std::vector<mat2>* row;
    mat2 operator()(index_t, index_t t) const { return (*row)[static_cast<size_t>(t)]; }
  };
  std::vector<mat2> exclusive(3);
  std::vector<mat2> inclusive(3);
  std::vector<int> calls(3, 0);
  std::vector<index_t> order;
  struct record_order {
    record inner;
    std::vector<index_t>* order;
    void operator()(index_t i, index_t t, const mat2& before, const mat2& total) const {
      order->push_back(t);
      inner(i, t, before, total);
    }
  };
  rlcore::host_context{}.reverse_scan_rows(
      rlcore::padded_unmasked(1, 3), mat2{}, from_row{&row}, matrix_then{},
      record_order{record{3, &exclusive, &inclusive, &calls}, &order});
  CHECK(order == std::vector<index_t>{2, 1, 0});
  CHECK(exclusive[2] == mat2{});
  CHECK(inclusive[2] == mat2{1, 0, 3, 1});
  CHECK(exclusive[1] == mat2{1, 0, 3, 1});
  CHECK(inclusive[1] == mat2{2, 0, 3, 1});
  CHECK(exclusive[0] == mat2{2, 0, 3, 1});
  CHECK(inclusive[0] == mat2{5, 1, 3, 1});
}

TEST_CASE("reverse_scan_rows: padded rows, masks do not change the scan, every slot once") {
  // A padded layout's rows all have length T; element and out see masked slots too.
  const index_t rows = 3;
  const index_t cols = 1100; // longer than one CUDA tile (256 threads x 4 tokens)
  std::vector<std::uint8_t> mask(static_cast<size_t>(rows * cols), 1);
  for (size_t k = 0; k < mask.size(); k += 3) {
    mask[k] = 0;
  }
  const auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), rows, cols));
  CHECK(scan_matches_products(layout, {cols, cols, cols}, cols));
  // The check can fail: the swapped combine (not the contract's order) does not match.
  CHECK_FALSE(scan_matches_products(layout, {cols, cols, cols}, cols, matrix_then_swapped{}));
  CHECK(scan_matches_products(rlcore::padded_unmasked(2, 1), {1, 1}, 1));
}

TEST_CASE("reverse_scan_rows: packed rows with empty, one-token and long rows") {
  const std::vector<index_t> lengths{5, 0, 1, 1030, 0, 2, 1};
  std::vector<index_t> offsets{0};
  for (index_t len : lengths) {
    offsets.push_back(offsets.back() + len);
  }
  CHECK(scan_matches_products(rlcore::packed(offsets), lengths, 1030));
  // All rows empty, and no rows at all: out is never called.
  const std::vector<index_t> empty_rows{0, 0, 0};
  CHECK(scan_matches_products(rlcore::packed(empty_rows), {0, 0}, 1));
  const std::vector<index_t> no_rows{0};
  CHECK(scan_matches_products(rlcore::packed(no_rows), {}, 1));
}

namespace {

struct coefficient_pair {
  double first;
  double second;
};

/// Affine coefficients of token (i, t): a in {0.5, -1, 0.9, 1}, b in [-1, 1] (masked tokens of
/// the padded test are (1, 0)).
struct affine_coeff {
  const std::uint8_t* mask;
  index_t cols;
  coefficient_pair operator()(index_t i, index_t t) const {
    const auto k = i * cols + t;
    if (mask != nullptr && mask[k] == 0) {
      return {1.0, 0.0};
    }
    const double a[] = {0.5, -1.0, 0.9, 1.0};
    return {a[k % 4], static_cast<double>((k * 37) % 21 - 10) / 10.0};
  }
};

struct store_carries {
  index_t cols;
  std::vector<double>* before;
  std::vector<double>* after;
  void operator()(index_t i, index_t t, double c, double c_next) const {
    (*before)[static_cast<size_t>(i * cols + t)] = c;
    (*after)[static_cast<size_t>(i * cols + t)] = c_next;
  }
};

} // namespace

TEST_CASE("reverse_affine_scan_rows: the recurrence c' = a c + b, bit for bit, padded and packed") {
  const index_t rows = 4;
  const index_t cols = 9;
  std::vector<std::uint8_t> mask(static_cast<size_t>(rows * cols), 1);
  mask[3] = 0;
  mask[8] = 0; // a row ending in a masked token
  mask[20] = 0;
  std::vector<double> before(mask.size(), -7.0);
  std::vector<double> after(mask.size(), -7.0);
  rlcore::host_context{}.reverse_affine_scan_rows(
      rlcore::padded(rlcore::make_matrix_view(mask.data(), rows, cols)),
      affine_coeff{mask.data(), cols}, store_carries{cols, &before, &after});
  for (index_t i = 0; i < rows; ++i) {
    double c = 0;
    for (index_t t = cols - 1; t >= 0; --t) {
      const auto k = static_cast<size_t>(i * cols + t);
      const coefficient_pair ab = affine_coeff{mask.data(), cols}(i, t);
      const double next = ab.first * c + ab.second;
      CHECK(before[k] == c);
      CHECK(after[k] == next);
      c = next;
    }
  }
  // By hand, packed row {(2, 1), (0.5, -1), (1, 3)} (first = a, second = b):
  //   t = 2: c = 0 -> 3;  t = 1: 3 -> 0.5 * 3 - 1 = 0.5;  t = 0: 0.5 -> 2 * 0.5 + 1 = 2.
  struct listed {
    coefficient_pair operator()(index_t, index_t t) const {
      const coefficient_pair row[] = {{2.0, 1.0}, {0.5, -1.0}, {1.0, 3.0}};
      return row[t];
    }
  };
  const std::vector<index_t> offsets{0, 0, 3};
  std::vector<double> b2(6, -7.0);
  std::vector<double> a2(6, -7.0);
  rlcore::host_context{}.reverse_affine_scan_rows(rlcore::packed(offsets), listed{},
                                                  store_carries{3, &b2, &a2});
  CHECK(b2 == std::vector<double>{-7, -7, -7, 0.5, 3, 0});
  CHECK(a2 == std::vector<double>{-7, -7, -7, 2, 0.5, 3});
}

TEST_CASE("affine_then composes affine maps in the contract's order") {
  // later: c -> 2 c + 1, earlier: c -> 3 c + 5; earlier after later: 3 (2 c + 1) + 5 = 6 c + 8.
  const auto both =
      rlcore::affine_then{}(rlcore::affine_map<double>{2, 1}, rlcore::affine_map<double>{3, 5});
  CHECK(both.a == 6.0);
  CHECK(both.b == 8.0);
  const rlcore::affine_map<double> identity;
  const auto left = rlcore::affine_then{}(identity, rlcore::affine_map<double>{3, 5});
  const auto right = rlcore::affine_then{}(rlcore::affine_map<double>{3, 5}, identity);
  CHECK((left.a == 3.0 && left.b == 5.0 && right.a == 3.0 && right.b == 5.0));
}
