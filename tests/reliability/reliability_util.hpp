// Helpers of the extreme-value suite: the invalid-argument check and bitwise comparison.
#pragma once

#include <rlcore/error.hpp>

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

namespace rlcore_reliability {

// Runs f, expects rlcore::invalid_argument naming `argument` with `fragment` in its message.
template <class F>
void check_invalid(F&& f, const std::string& argument, const std::string& fragment) {
  try {
    f();
    FAIL("expected rlcore::invalid_argument for ", argument);
  } catch (const rlcore::invalid_argument& e) {
    CHECK(e.argument() == argument);
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find(fragment) != std::string::npos);
    CHECK(what.find("'" + argument + "'") != std::string::npos);
  }
}

// True when a and b hold the same bits (NaN payloads and signed zeros included).
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

} // namespace rlcore_reliability
