// check_invalid(f, argument, fragment): f must throw rlcore::invalid_argument naming `argument`
// with `fragment` in its message (the pattern of tests/tensor/test_layout.cpp).
#pragma once

#include <rlcore/error.hpp>

#include <doctest/doctest.h>

#include <string>

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
