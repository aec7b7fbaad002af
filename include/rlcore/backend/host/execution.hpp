// The host (CPU) backend: execution_context<host_space>. Plain loops in index order, so every
// reduction is deterministic; no dependency beyond the standard library.
#pragma once

#include "../../config.hpp"
#include "../../execution.hpp"
#include "../../tensor/memory_space.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>

namespace rlcore {

/// An owning, uninitialised-then-zeroed array in host memory.
template <class T>
class host_buffer {
public:
  host_buffer() = default;
  explicit host_buffer(index_t n)
      : size_(n), data_(n > 0 ? new T[static_cast<size_t>(n)]() : nullptr) {}
  [[nodiscard]] T* data() const { return data_.get(); }
  [[nodiscard]] index_t size() const { return size_; }
  T& operator[](index_t i) const { return data_[static_cast<size_t>(i)]; }

private:
  index_t size_ = 0;
  std::unique_ptr<T[]> data_;
};

template <>
struct execution_context<host_space> {
  using space = host_space;

  template <class T>
  [[nodiscard]] host_buffer<T> allocate(index_t n) const {
    return host_buffer<T>(n);
  }

  template <class F>
  void for_each(index_t n, F&& f) const {
    for (index_t i = 0; i < n; ++i) {
      f(i);
    }
  }

  template <class Acc, class F>
  [[nodiscard]] Acc reduce(index_t n, Acc init, F&& f) const {
    for (index_t i = 0; i < n; ++i) {
      init += f(i);
    }
    return init;
  }

  template <class Layout, class F>
  void for_each_token(const Layout& layout, F&& f) const {
    const index_t rows = layout.rows();
    for (index_t i = 0; i < rows; ++i) {
      const index_t len = layout.row_length(i);
      for (index_t t = 0; t < len; ++t) {
        f(i, t);
      }
    }
  }

  template <class Layout, class Acc, class F>
  [[nodiscard]] Acc reduce_tokens(const Layout& layout, Acc init, F&& f) const {
    const index_t rows = layout.rows();
    for (index_t i = 0; i < rows; ++i) {
      const index_t len = layout.row_length(i);
      for (index_t t = 0; t < len; ++t) {
        init += f(i, t);
      }
    }
    return init;
  }

  template <class Layout, class Acc, class F>
  void reduce_rows(const Layout& layout, Acc* out, F&& f) const {
    const index_t rows = layout.rows();
    for (index_t i = 0; i < rows; ++i) {
      const index_t len = layout.row_length(i);
      Acc acc{};
      for (index_t t = 0; t < len; ++t) {
        acc += f(i, t);
      }
      out[i] = acc;
    }
  }

  /// Reverse affine scan along each row: carry c = 0 at the row's end, then for t = len-1 .. 0
  ///   (a, b) = coeff(i, t);  c_new = a * c + b;  out(i, t, c, c_new);  c = c_new
  /// so `out` sees the exclusive (c, from t + 1 onwards) and inclusive (c_new) carries.
  template <class Layout, class Coeff, class Out>
  void reverse_affine_scan_rows(const Layout& layout, Coeff&& coeff, Out&& out) const {
    const index_t rows = layout.rows();
    for (index_t i = 0; i < rows; ++i) {
      const index_t len = layout.row_length(i);
      using C = decltype(coeff(i, index_t{0}).second);
      C carry{0};
      for (index_t t = len - 1; t >= 0; --t) {
        const auto ab = coeff(i, t);
        const C next = ab.first * carry + ab.second;
        out(i, t, carry, next);
        carry = next;
      }
    }
  }

  /// Copies n elements from context memory to host memory (a plain copy on the host).
  template <class T>
  void copy_to_host(const T* src, index_t n, T* dst) const {
    if (n > 0) {
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
    }
  }
};

using host_context = execution_context<host_space>;

} // namespace rlcore
