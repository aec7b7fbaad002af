// The exact, associative, non-commutative monoid of the scan tests (host and CUDA): 2 x 2
// matrices over the integers mod 2^32 (unsigned wrap-around, so products are exact), with a
// token's matrix from a hash of (i, t). A segment t .. u of a row is M_t * M_t+1 * ... * M_u.
#pragma once

#include <rlcore/config.hpp>

#include <cstdint>

namespace rlcore_test {

struct mat2 {
  std::uint32_t m00 = 1;
  std::uint32_t m01 = 0;
  std::uint32_t m10 = 0;
  std::uint32_t m11 = 1;
};

inline bool operator==(const mat2& x, const mat2& y) {
  return x.m00 == y.m00 && x.m01 == y.m01 && x.m10 == y.m10 && x.m11 == y.m11;
}

/// x * y (row-major product).
RLCORE_HD inline mat2 product(const mat2& x, const mat2& y) {
  return {x.m00 * y.m00 + x.m01 * y.m10, x.m00 * y.m01 + x.m01 * y.m11,
          x.m10 * y.m00 + x.m11 * y.m10, x.m10 * y.m01 + x.m11 * y.m11};
}

/// reverse_scan_rows' combine: the segment `earlier` followed by `later` is earlier * later.
struct matrix_then {
  RLCORE_HD mat2 operator()(const mat2& later, const mat2& earlier) const {
    return product(earlier, later);
  }
};

/// The same with the operands swapped (the wrong order for this monoid).
struct matrix_then_swapped {
  RLCORE_HD mat2 operator()(const mat2& later, const mat2& earlier) const {
    return product(later, earlier);
  }
};

/// Token (i, t)'s matrix: small entries from a hash of (i, t), determinant not 1 in general.
RLCORE_HD inline mat2 token_matrix(rlcore::index_t i, rlcore::index_t t) {
  auto h = static_cast<std::uint32_t>(i * 7919 + t * 104729 + 17);
  h ^= h >> 13;
  h *= 0x5bd1e995U;
  h ^= h >> 15;
  return {h % 5, (h >> 3) % 4 + 1, (h >> 7) % 3, (h >> 11) % 5 + 1};
}

/// reverse_scan_rows' element: token_matrix (masked tokens included: the scan sees them all).
struct matrix_element {
  RLCORE_HD mat2 operator()(rlcore::index_t i, rlcore::index_t t) const {
    return token_matrix(i, t);
  }
};

} // namespace rlcore_test
