// check_invalid(f, argument, fragment), shared by every test suite: f must throw
// rlcore::invalid_argument that names `argument` (argument() and "'argument'" in the message) and
// whose message contains `fragment`.
#pragma once

#include <rlcore/error.hpp>

#include <doctest/doctest.h>

#include <string>

namespace rlcore_test {

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

} // namespace rlcore_test
