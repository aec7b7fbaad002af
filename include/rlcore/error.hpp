// rlcore error types. Every public entry validates its arguments and throws one of these with a
// message of the form "rlcore::<function>: argument '<name>': <what was expected>, got <actual>".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace rlcore {

/// Thrown when an argument is invalid (shape, offsets, group layout, option out of range,
/// non-finite value under the "error" NaN policy). `argument()` names the offending argument.
class invalid_argument : public std::invalid_argument {
public:
  invalid_argument(std::string argument, const std::string& message)
      : std::invalid_argument(message), argument_(std::move(argument)) {}
  /// The name of the argument that failed validation, as spelled in the public signature.
  [[nodiscard]] const std::string& argument() const noexcept { return argument_; }

private:
  std::string argument_;
};

/// Thrown when a valid call fails at run time (CUDA errors, device-side validation flags).
class runtime_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

/// Throws rlcore::invalid_argument naming `function` and `argument` with the message parts.
template <class... Parts>
[[noreturn]] void throw_invalid(const char* function, const char* argument, const Parts&... parts) {
  throw invalid_argument(argument,
                         concat("rlcore::", function, ": argument '", argument, "': ", parts...));
}

/// Validation helper: if `condition` is false, throws rlcore::invalid_argument.
template <class... Parts>
void require(bool condition, const char* function, const char* argument, const Parts&... parts) {
  if (!condition) {
    throw_invalid(function, argument, parts...);
  }
}

} // namespace detail
} // namespace rlcore
