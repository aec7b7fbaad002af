// Shared helpers of the libFuzzer targets: decoding bytes into shapes, offsets and finite values
// (with extremes over-represented), and checks that abort with a message when violated.
#pragma once

#include <rlcore/error.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

namespace rlcore_fuzz {

/// Aborts (a libFuzzer crash, with the input saved) when `condition` is false.
inline void check(bool condition, const char* what, double detail = 0.0) {
  if (!condition) {
    std::fprintf(stderr, "rlcore fuzz invariant violated: %s (%.17g)\n", what, detail);
    std::abort();
  }
}

/// Runs `call`; an rlcore::invalid_argument must name its argument in a well-formed message.
/// Returns true when the call succeeded. Any other exception escapes and crashes the fuzzer.
template <class Call>
bool succeeds_or_invalid(Call&& call) {
  try {
    call();
    return true;
  } catch (const rlcore::invalid_argument& e) {
    const std::string what = e.what();
    check(!e.argument().empty(), "invalid_argument without an argument name");
    check(what.rfind("rlcore::", 0) == 0, "message does not start with rlcore::<function>");
    check(what.find("'" + e.argument() + "'") != std::string::npos,
          "message does not quote the argument name");
    return false;
  }
}

/// A finite double of magnitude at most `limit`; extremes (0, +-1e30, +-1e4, +-20 clamp
/// boundaries, float and bf16 limits, denormals, +-1e300, the double maximum) are
/// over-represented; arbitrary bit patterns and extremes beyond `limit` become +-limit.
inline double finite_value(FuzzedDataProvider& in, double limit = 1e30) {
  static constexpr double extremes[] = {0.0, -0.0, 1.0, -1.0, 0.5, 1e30, -1e30, 1e4, -1e4, 20.0,
                                        -20.0, 20.000001, -20.000001, 88.72, -88.72, 709.0, -745.0,
                                        3.3895313892515355e38, // bf16 max
                                        -3.3895313892515355e38,
                                        3.4028234663852886e38, // float max
                                        1e-300, 4.9406564584124654e-324, 1e-6, 0.8, 1.2, 1.28,
                                        // beyond 1e30 (clamped to `limit` by the targets that
                                        // cap their values): squares overflow beyond 1.3e154,
                                        // the moments' unit changes at 2^+-440 (math/stats.hpp)
                                        1e300, -1e300,
                                        1.7976931348623157e308, // double max
                                        -1.7976931348623157e308, 1.5e154, 0x1p440,
                                        0x1.0000000000001p440, 0x1p-440, -0x1.fffffffffffffp-441};
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
  case 0: {
    const double v = in.PickValueInArray(extremes);
    return std::fabs(v) <= limit ? v : std::copysign(limit, v);
  }
  case 1: {
    const auto bits = in.ConsumeIntegral<std::uint64_t>();
    double v = 0;
    static_assert(sizeof v == sizeof bits);
    __builtin_memcpy(&v, &bits, sizeof v);
    if (!std::isfinite(v)) {
      return 0.0;
    }
    return std::fabs(v) <= limit ? v : std::copysign(limit, v);
  }
  default:
    return in.ConsumeFloatingPointInRange<double>(-std::min(limit, 10.0), std::min(limit, 10.0));
  }
}

/// n finite values.
inline std::vector<double> finite_values(FuzzedDataProvider& in, std::size_t n,
                                         double limit = 1e30) {
  std::vector<double> out(n);
  for (auto& v : out) {
    v = finite_value(in, limit);
  }
  return out;
}

/// n values of a 0/1 mask, or (with `any_values`) of arbitrary small integers (valid when != 0).
inline std::vector<std::uint8_t> mask_values(FuzzedDataProvider& in, std::size_t n,
                                             bool any_values = false) {
  std::vector<std::uint8_t> out(n);
  for (auto& v : out) {
    v = any_values ? in.ConsumeIntegral<std::uint8_t>() : (in.ConsumeBool() ? 1 : 0);
  }
  return out;
}

/// Non-decreasing offsets 0 = o[0] <= ... <= o[count] with steps in [0, max_step].
inline std::vector<std::int64_t> valid_offsets(FuzzedDataProvider& in, std::size_t count,
                                               int max_step) {
  std::vector<std::int64_t> out(count + 1, 0);
  for (std::size_t k = 1; k <= count; ++k) {
    out[k] = out[k - 1] + in.ConsumeIntegralInRange<int>(0, max_step);
  }
  return out;
}

} // namespace rlcore_fuzz
