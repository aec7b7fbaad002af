// Helpers of the extreme-value suite: the invalid-argument check and bitwise comparison.
#pragma once

#include "../common/check_invalid.hpp"

#include <rlcore/error.hpp>

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

namespace rlcore_reliability {

using rlcore_test::check_invalid;

// True when a and b hold the same bits (NaN payloads and signed zeros included).
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

} // namespace rlcore_reliability
