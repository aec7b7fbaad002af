// The host (CPU) backend: execution_context<host_space>. Plain loops in index order, so every
// reduction is deterministic; no dependency beyond the standard library.
#pragma once

#include "../../config.hpp"
#include "../../execution.hpp"
#include "../../tensor/memory_space.hpp"

#include <algorithm>
#include <concepts>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>

// Marks a loop whose iterations are independent (GCC: lets it vectorise without alias checks).
#if defined(__GNUC__) && !defined(__clang__)
#define RLCORE_DETAIL_INDEPENDENT_ITERATIONS _Pragma("GCC ivdep")
#else
#define RLCORE_DETAIL_INDEPENDENT_ITERATIONS
#endif

namespace rlcore {

/// A token functor with a host chunked form (optional; see reduce_tokens): besides f(i, t) it
/// provides local chunk arrays (`host_chunk`, with `width` slots) and metric lanes
/// (`host_lanes`), and
///   f.host_chunk_enabled()          whether the chunked form applies to this call's options
///   f.host_load(c, k, i, t)         gathers token (i, t) into slot k of chunk c
///   f.host_load_padding(c, k)       fills slot k with an invalid (masked) token
///   f.host_load_full(c, i, t0)      host_load of the full chunk t0 .. t0 + width - 1 of row i
///   f.host_store_full(c, i, t0)     host_store of a full chunk
///   f.host_compute(c, lanes, k)     the per-slot body, over c and lanes[k] only (vectorisable)
///   f.host_store(c, k, i, t)        scatters slot k's outputs to token (i, t)
///   f.host_finish(lanes)            the lanes summed in a fixed order, as an accumulator
template <class F, class Acc>
concept host_chunked_token_functor = requires(const F& f, typename F::host_chunk& c,
                                              typename F::host_lanes& l, index_t k) {
  { F::host_chunk::width } -> std::convertible_to<index_t>;
  { f.host_chunk_enabled() } -> std::convertible_to<bool>;
  f.host_load(c, k, k, k);
  f.host_load_padding(c, k);
  f.host_load_full(c, k, k);
  f.host_store_full(c, k, k);
  f.host_compute(c, l, k);
  f.host_store(c, k, k, k);
  { f.host_finish(l) } -> std::convertible_to<Acc>;
};

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

  /// init + the sum over token slots of f(i, t), in a fixed order. A functor with a host chunked
  /// form (host_chunked_token_functor) that enables it is run W slots of a row at a time: gather,
  /// the per-slot body in a loop the compiler vectorises, scatter; its sums go to W lanes (slot k
  /// of every chunk to lane k) that f.host_finish adds in lane order. Deterministic either way.
  template <class Layout, class Acc, class F>
  [[nodiscard]] Acc reduce_tokens(const Layout& layout, Acc init, F&& f) const {
    using Functor = std::remove_cvref_t<F>;
    if constexpr (host_chunked_token_functor<Functor, Acc>) {
      if (f.host_chunk_enabled()) {
        init += reduce_tokens_chunked(layout, static_cast<const Functor&>(f));
        return init;
      }
    }
    const index_t rows = layout.rows();
    for (index_t i = 0; i < rows; ++i) {
      const index_t len = layout.row_length(i);
      for (index_t t = 0; t < len; ++t) {
        init += f(i, t);
      }
    }
    return init;
  }

  template <class Layout, class F>
  [[nodiscard]] RLCORE_DETAIL_FORCE_INLINE auto reduce_tokens_chunked(const Layout& layout,
                                                                      const F& f) const {
    constexpr index_t width = F::host_chunk::width;
    typename F::host_chunk chunk;
    typename F::host_lanes lanes{};
    const index_t rows = layout.rows();
    for (index_t i = 0; i < rows; ++i) {
      const index_t len = layout.row_length(i);
      for (index_t t0 = 0; t0 < len; t0 += width) {
        const index_t n = std::min(width, len - t0);
        if (n == width) {
          f.host_load_full(chunk, i, t0);
        } else {
          for (index_t k = 0; k < width; ++k) {
            if (k < n) {
              f.host_load(chunk, k, i, t0 + k);
            } else {
              f.host_load_padding(chunk, k);
            }
          }
        }
        RLCORE_DETAIL_INDEPENDENT_ITERATIONS
        for (index_t k = 0; k < width; ++k) {
          f.host_compute(chunk, lanes, k);
        }
        if (n == width) {
          f.host_store_full(chunk, i, t0);
        } else {
          for (index_t k = 0; k < n; ++k) {
            f.host_store(chunk, k, i, t0 + k);
          }
        }
      }
    }
    return f.host_finish(lanes);
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
