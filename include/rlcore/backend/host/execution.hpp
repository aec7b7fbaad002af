// The host (CPU) backend: execution_context<host_space>. Plain loops in index order, so every
// reduction is deterministic; no dependency beyond the standard library.
#pragma once

#include "../../config.hpp"
#include "../../error.hpp"
#include "../../execution.hpp"
#include "../../tensor/memory_space.hpp"

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstring>
#include <memory>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace rlcore {

/// A token functor with a host chunked form (optional; see reduce_tokens): besides f(i, t) it
/// provides local chunk arrays (`host_chunk`, with `width` slots and a flush interval `pieces`),
/// the in-place slots of a row (`host_row`), metric lanes (`host_lanes`), kernel variants
/// (`host_variants`, a compile-time count), and
///   f.host_chunk_enabled()          whether the chunked form applies to this call's options
///   f.host_variant()                the variant in [0, host_variants) for this call's options
///   f.host_row_prepare(i)           called at the start of row i, before any of its chunks
///   f.host_row_begin(r, i)          whether row i can be read and written in place; if so, fills
///                                   r (pointers, the row's constants)
///   f.host_compute_row<V>(r, t0, lanes)  the per-slot body of variant V over the full chunk
///                                   t0 .. t0 + width - 1 of row r, in place (slot k = token
///                                   t0 + k, touching lanes[k] only; a loop that vectorises)
///   f.host_load(c, k, i, t)         gathers token (i, t) into slot k of chunk c
///   f.host_load_padding(c, k)       fills slot k with an invalid (masked) token
///   f.host_compute<V>(c, lanes)     the per-slot body over chunk c's local arrays
///   f.host_store(c, k, i, t)        scatters slot k's outputs to token (i, t)
///   f.host_flush(lanes, i)          folds the lanes' running sums of row i into their totals
///                                   (after every `pieces` chunks of a row and at the row's end)
///   f.host_finish(lanes)            the lanes summed in a fixed order, as an accumulator
/// Both forms of a chunk must give the same bits (the lanes do not know which one ran).
template <class F, class Acc>
concept host_chunked_token_functor = requires(const F& f, typename F::host_chunk& c,
                                              typename F::host_row& r, typename F::host_lanes& l,
                                              index_t k) {
  { F::host_chunk::width } -> std::convertible_to<index_t>;
  { F::host_chunk::pieces } -> std::convertible_to<index_t>;
  { F::host_variants } -> std::convertible_to<int>;
  { f.host_chunk_enabled() } -> std::convertible_to<bool>;
  { f.host_variant() } -> std::convertible_to<int>;
  f.host_row_prepare(k);
  { f.host_row_begin(r, k) } -> std::convertible_to<bool>;
  f.template host_compute_row<0>(r, k, l);
  f.host_load(c, k, k, k);
  f.host_load_padding(c, k);
  f.template host_compute<0>(c, l);
  f.host_store(c, k, k, k);
  f.host_flush(l, k);
  { f.host_finish(l) } -> std::convertible_to<Acc>;
};

/// Instruction sets the host's chunked token kernels are compiled for, selected at run time (the
/// library adds no -march: the baseline is whatever the including translation unit targets, x86-64
/// SSE2 by default). avx2 = AVX2 + FMA, avx512 = AVX-512 F/VL/BW/DQ. Only the baseline exists when
/// RLCORE_HOST_ISA_DISPATCH is 0 (any compiler other than GCC / Clang on x86-64, and nvcc).
enum class host_isa { baseline = 0, avx2 = 1, avx512 = 2 };

// Runtime instruction-set dispatch of the host chunked kernels (define to 0 to compile the
// baseline only).
#ifndef RLCORE_HOST_ISA_DISPATCH
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)       \
    && !defined(__NVCOMPILER)
#define RLCORE_HOST_ISA_DISPATCH 1
#else
#define RLCORE_HOST_ISA_DISPATCH 0
#endif
#endif

/// The best host_isa this CPU (and OS) supports, checked once.
inline host_isa supported_host_isa() {
#if RLCORE_HOST_ISA_DISPATCH
  static const host_isa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
      return host_isa::avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return host_isa::avx2;
    }
    return host_isa::baseline;
  }();
  return best;
#else
  return host_isa::baseline;
#endif
}

namespace detail {

// The kernels are compiled without floating-point contraction (no a * b + c fused into one FMA
// with a single rounding), so that every instruction set gives the same bits: vector lanes are
// IEEE operations element by element and the lane sums keep their order.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define RLCORE_DETAIL_HOST_KERNEL_ATTRIBUTES [[gnu::noinline, gnu::optimize("fp-contract=off")]]
#elif defined(__clang__) || defined(__CUDACC__)
#define RLCORE_DETAIL_HOST_KERNEL_ATTRIBUTES [[gnu::noinline]]
#else
#define RLCORE_DETAIL_HOST_KERNEL_ATTRIBUTES
#endif

// The opt-in contracted kernels (host_context::contract_fma): a * b + c fused into one FMA where
// the instruction set has it (GCC; Clang contracts within expressions in either kernel).
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define RLCORE_DETAIL_HOST_FMA_KERNEL_ATTRIBUTES                                                   \
  [[gnu::noinline, gnu::optimize("fp-contract=fast")]]
#elif defined(__clang__) || defined(__CUDACC__)
#define RLCORE_DETAIL_HOST_FMA_KERNEL_ATTRIBUTES [[gnu::noinline]]
#else
#define RLCORE_DETAIL_HOST_FMA_KERNEL_ATTRIBUTES
#endif

/// The chunked token loop of reduce_tokens over rows [row_begin, row_end), kernel variant
/// `Variant`: `width` slots of a row at a time, the per-slot body in a loop the compiler
/// vectorises: in place for the full chunks of a row that host_row_begin accepts
/// (host_compute_row), else gathered into local arrays (host_load*, host_compute, host_store);
/// running sums folded by host_flush every `pieces` chunks of a row and at its end; W lanes that
/// f.host_finish adds in lane order.
template <int Variant, class Layout, class F>
RLCORE_DETAIL_FORCE_INLINE auto host_chunked_rows(const Layout& layout, const F& f,
                                                  index_t row_begin, index_t row_end) {
  constexpr index_t width = F::host_chunk::width;
  constexpr index_t piece_slots = width * F::host_chunk::pieces;
  typename F::host_chunk chunk;
  typename F::host_row row;
  typename F::host_lanes lanes{};
  for (index_t i = row_begin; i < row_end; ++i) {
    const index_t len = layout.row_length(i);
    index_t t0 = 0;
    f.host_row_prepare(i);
    if (len >= width && f.host_row_begin(row, i)) {
      for (; t0 + width <= len; t0 += width) {
        f.template host_compute_row<Variant>(row, t0, lanes);
        if (t0 + width >= len || (t0 + width) % piece_slots == 0) {
          f.host_flush(lanes, i);
        }
      }
    }
    for (; t0 < len; t0 += width) {
      const index_t n = std::min(width, len - t0);
      for (index_t k = 0; k < width; ++k) {
        if (k < n) {
          f.host_load(chunk, k, i, t0 + k);
        } else {
          f.host_load_padding(chunk, k);
        }
      }
      f.template host_compute<Variant>(chunk, lanes);
      for (index_t k = 0; k < n; ++k) {
        f.host_store(chunk, k, i, t0 + k);
      }
      if (t0 + width >= len || (t0 + width) % piece_slots == 0) {
        f.host_flush(lanes, i);
      }
    }
  }
  return f.host_finish(lanes);
}

/// host_chunked_rows compiled for the including translation unit's instruction set; in a function
/// of its own (not inlined into the caller), so it is optimised the same way wherever it is used.
template <int Variant, class Layout, class F>
RLCORE_DETAIL_HOST_KERNEL_ATTRIBUTES auto
host_chunked_rows_baseline(const Layout& layout, const F& f, index_t row_begin, index_t row_end) {
  return host_chunked_rows<Variant>(layout, f, row_begin, row_end);
}

#if RLCORE_HOST_ISA_DISPATCH
/// host_chunked_rows for AVX2 + FMA (called only when the CPU has them).
template <int Variant, class Layout, class F>
RLCORE_DETAIL_HOST_KERNEL_ATTRIBUTES [[gnu::target("avx2,fma,bmi,bmi2,popcnt")]] auto
host_chunked_rows_avx2(const Layout& layout, const F& f, index_t row_begin, index_t row_end) {
  return host_chunked_rows<Variant>(layout, f, row_begin, row_end);
}

/// host_chunked_rows for AVX-512 F/VL/BW/DQ (called only when the CPU has them).
template <int Variant, class Layout, class F>
RLCORE_DETAIL_HOST_KERNEL_ATTRIBUTES
    [[gnu::target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2,popcnt")]] auto
    host_chunked_rows_avx512(const Layout& layout, const F& f, index_t row_begin, index_t row_end) {
  return host_chunked_rows<Variant>(layout, f, row_begin, row_end);
}

/// host_chunked_rows_avx2 with FMA contraction (host_context::contract_fma).
template <int Variant, class Layout, class F>
RLCORE_DETAIL_HOST_FMA_KERNEL_ATTRIBUTES [[gnu::target("avx2,fma,bmi,bmi2,popcnt")]] auto
host_chunked_rows_avx2_fma(const Layout& layout, const F& f, index_t row_begin, index_t row_end) {
  return host_chunked_rows<Variant>(layout, f, row_begin, row_end);
}

/// host_chunked_rows_avx512 with FMA contraction (host_context::contract_fma).
template <int Variant, class Layout, class F>
RLCORE_DETAIL_HOST_FMA_KERNEL_ATTRIBUTES
    [[gnu::target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2,popcnt")]] auto
    host_chunked_rows_avx512_fma(const Layout& layout, const F& f, index_t row_begin,
                                 index_t row_end) {
  return host_chunked_rows<Variant>(layout, f, row_begin, row_end);
}
#endif

/// The kernel of variant `variant` (>= Variant, < F::host_variants) for instruction set `isa` on
/// rows [row_begin, row_end), FMA-contracted when `fma` (AVX2 / AVX-512, and only the variant
/// F::host_fma_variant when the functor names one: the others run their exact kernels).
template <int Variant, class Layout, class F>
auto host_chunked_rows_dispatch(int variant, host_isa isa, bool fma, const Layout& layout,
                                const F& f, index_t row_begin, index_t row_end) {
  if constexpr (Variant + 1 < F::host_variants) {
    if (variant != Variant) {
      return host_chunked_rows_dispatch<Variant + 1>(variant, isa, fma, layout, f, row_begin,
                                                     row_end);
    }
  }
#if RLCORE_HOST_ISA_DISPATCH
  // FMA clones only for the functor's F::host_fma_variant (compile time: each clone is a kernel)
  constexpr bool has_fma_clone = [] {
    if constexpr (requires { F::host_fma_variant; }) {
      return F::host_fma_variant == Variant;
    } else {
      return false;
    }
  }();
  if (isa == host_isa::avx512) {
    if constexpr (has_fma_clone) {
      if (fma) {
        return host_chunked_rows_avx512_fma<Variant>(layout, f, row_begin, row_end);
      }
    }
    return host_chunked_rows_avx512<Variant>(layout, f, row_begin, row_end);
  }
  if (isa == host_isa::avx2) {
    if constexpr (has_fma_clone) {
      if (fma) {
        return host_chunked_rows_avx2_fma<Variant>(layout, f, row_begin, row_end);
      }
    }
    return host_chunked_rows_avx2<Variant>(layout, f, row_begin, row_end);
  }
#endif
  static_cast<void>(isa);
  static_cast<void>(fma);
  return host_chunked_rows_baseline<Variant>(layout, f, row_begin, row_end);
}

} // namespace detail

/// A token functor with a host whole-row form (optional; see reduce_rows and reduce_tokens):
///   f.host_row_sum_enabled()   whether the row form applies to this call
///   f.host_row_sum(i)          sum_t f(i, t) over row i computed in one go (e.g. a mask count),
///                              exactly equal to the token-by-token sum
template <class F, class Acc>
concept host_row_functor = requires(const F& f, index_t i) {
  { f.host_row_sum_enabled() } -> std::convertible_to<bool>;
  { f.host_row_sum(i) } -> std::convertible_to<Acc>;
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

  /// Threads of the chunked token reductions (the fused policy objective's token pass): 1 = the
  /// calling thread only, n > 1 = up to n threads (the calling one and n - 1 started per call, only
  /// when there are at least two blocks of work), 0 = one per hardware thread. The result is
  /// the same bits for every value.
  int threads = 1;
  /// The most capable instruction set the chunked kernels may use (the CPU's best up to this cap;
  /// for tests and comparisons: the result is the same bits for every value with GCC).
  host_isa max_isa = host_isa::avx512;
  /// Opt-in: the chunked kernels for AVX2 / AVX-512 compiled with FMA contraction (a * b + c in
  /// one rounding: fewer instructions, e.g. the polynomial exps). The result is then no longer the
  /// same bits on every instruction set, only within rounding (relative ~1e-6 in float; measured
  /// in tests/objective/test_host_execution.cpp); it stays the same bits for every `threads` on a
  /// given instruction set. Only for the functor's FMA variant (the fused policy objective: the
  /// GRPO / PPO defaults, clipped surrogate + k3 or no KL; other options run the exact kernels).
  /// No effect on the baseline kernel, nor with compilers other than GCC (Clang contracts within
  /// expressions either way).
  bool contract_fma = false;

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
  /// of every chunk to lane k) that f.host_finish adds in lane order, per block of rows, and the
  /// blocks are added in block order (see reduce_tokens_chunked: `threads` and `max_isa` apply
  /// here). A functor with a host row form (host_row_functor) is summed row by row. Deterministic
  /// in every case.
  template <class Layout, class Acc, class F>
  [[nodiscard]] Acc reduce_tokens(const Layout& layout, Acc init, F&& f) const {
    using Functor = std::remove_cvref_t<F>;
    if constexpr (host_chunked_token_functor<Functor, Acc>) {
      if (f.host_chunk_enabled()) {
        init += reduce_tokens_chunked(layout, static_cast<const Functor&>(f));
        return init;
      }
    }
    if constexpr (host_row_functor<Functor, Acc>) {
      if (f.host_row_sum_enabled()) {
        const index_t rows = layout.rows();
        for (index_t i = 0; i < rows; ++i) {
          init += f.host_row_sum(i);
        }
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

  /// The chunked form of reduce_tokens: the rows are split into blocks of consecutive rows of
  /// about `chunked_block_slots` token slots (a partition fixed by the layout alone), each block
  /// is reduced by one kernel call (host_chunked_rows, into its own lanes), and the block sums are
  /// added in block order, so the result is the same bits for every `threads` and `max_isa`.
  template <class Layout, class F>
  [[nodiscard]] auto reduce_tokens_chunked(const Layout& layout, const F& f) const {
    const auto isa = static_cast<host_isa>(
        std::min(static_cast<int>(max_isa), static_cast<int>(supported_host_isa())));
    const int variant = f.host_variant();
    const auto kernel = [&](index_t row_begin, index_t row_end) {
      return detail::host_chunked_rows_dispatch<0>(variant, isa, contract_fma, layout, f, row_begin,
                                                   row_end);
    };
    using sums = decltype(kernel(index_t{0}, index_t{0}));
    const index_t rows = layout.rows();
    // block b is rows [bounds[b], bounds[b + 1])
    std::vector<index_t> bounds{0};
    index_t block_slots = 0;
    for (index_t i = 0; i < rows; ++i) {
      block_slots += layout.row_length(i);
      if (block_slots >= chunked_block_slots || i + 1 == rows) {
        bounds.push_back(i + 1);
        block_slots = 0;
      }
    }
    const auto blocks = static_cast<index_t>(bounds.size()) - 1;
    const index_t workers = std::min<index_t>(worker_threads(), blocks);
    sums total{};
    if (workers <= 1) {
      for (index_t b = 0; b < blocks; ++b) {
        total += kernel(bounds[size_t(b)], bounds[size_t(b) + 1]);
      }
      return total;
    }
    std::vector<sums> partial(static_cast<size_t>(blocks));
    std::atomic<index_t> next_block{0};
    const auto work = [&] {
      for (index_t b = next_block++; b < blocks; b = next_block++) {
        partial[size_t(b)] = kernel(bounds[size_t(b)], bounds[size_t(b) + 1]);
      }
    };
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(workers - 1));
    try {
      for (index_t w = 1; w < workers; ++w) {
        pool.emplace_back(work);
      }
    } catch (const std::system_error&) {
      // no more threads available: the ones started and this one do the remaining blocks
    }
    work();
    for (std::thread& worker : pool) {
      worker.join();
    }
    for (const sums& block : partial) {
      total += block;
    }
    return total;
  }

  /// The number of threads reduce_tokens_chunked may use (validates `threads`).
  [[nodiscard]] index_t worker_threads() const {
    detail::require(threads >= 0, "execution_context<host_space>", "threads",
                    "expected a thread count >= 1, or 0 for every hardware thread, got ", threads);
    if (threads == 0) {
      return std::max<index_t>(1, static_cast<index_t>(std::thread::hardware_concurrency()));
    }
    return threads;
  }

  /// Token slots per block of the chunked reduction (see reduce_tokens_chunked).
  static constexpr index_t chunked_block_slots = index_t(1) << 16;

  /// out[i] = sum_t f(i, t), token by token in index order, or f.host_row_sum(i) for a functor
  /// with a host row form (host_row_functor) that enables it.
  template <class Layout, class Acc, class F>
  void reduce_rows(const Layout& layout, Acc* out, F&& f) const {
    using Functor = std::remove_cvref_t<F>;
    if constexpr (host_row_functor<Functor, Acc>) {
      if (f.host_row_sum_enabled()) {
        const index_t rows = layout.rows();
        for (index_t i = 0; i < rows; ++i) {
          out[i] = f.host_row_sum(i);
        }
        return;
      }
    }
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

  /// Reverse scan of each row over the monoid of `identity` (contract in execution.hpp): a plain
  /// loop, t = len-1 .. 0, later = identity at the row's end:
  ///   m = element(i, t);  total = combine(later, m);  out(i, t, later, total);  later = total.
  /// element, combine and out are called in that order, token by token.
  template <class Layout, class M, class Element, class Combine, class Out>
  void reverse_scan_rows(const Layout& layout, const M& identity, Element&& element,
                         Combine&& combine, Out&& out) const {
    const index_t rows = layout.rows();
    for (index_t i = 0; i < rows; ++i) {
      const index_t len = layout.row_length(i);
      M later = identity;
      for (index_t t = len - 1; t >= 0; --t) {
        const M m = element(i, t);
        const M total = combine(later, m);
        out(i, t, later, total);
        later = total;
      }
    }
  }

  /// Reverse affine scan along each row: carry c = 0 at the row's end, then for t = len-1 .. 0
  ///   (a, b) = coeff(i, t);  c_new = a * c + b;  out(i, t, c, c_new);  c = c_new
  /// so `out` sees the exclusive (c, from t + 1 onwards) and inclusive (c_new) carries. It is
  /// reverse_scan_rows over affine_map<C> (C: the type of coeff's second), whose b is the carry.
  template <class Layout, class Coeff, class Out>
  void reverse_affine_scan_rows(const Layout& layout, Coeff&& coeff, Out&& out) const {
    using C = std::remove_cvref_t<decltype(coeff(index_t{0}, index_t{0}).second)>;
    reverse_scan_rows(layout, affine_map<C>{},
                      detail::affine_scan_element<C, std::decay_t<Coeff>>{coeff}, affine_then{},
                      detail::affine_scan_out<C, std::decay_t<Out>>{out});
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
