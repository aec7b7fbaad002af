// The CUDA backend: execution_context<device_space>, the primitives of execution.hpp on device
// memory, for padded and packed layouts whose views point to device memory.
//
//   rlcore::execution_context<rlcore::device_space> ctx{stream};          // or {stream, resource}
//   auto loss = rlcore::grpo_objective(layout, ..., options, ctx);        // any generic algorithm
//
// Every kernel is launched on ctx.stream; nothing synchronises the device except the calls that
// return a host value (reduce, reduce_tokens, copy_to_host), which wait for their own result.
// Temporary memory comes from ctx.resource (stream-ordered cudaMallocAsync by default).
// Reductions are deterministic: fixed-shape two-stage CUB block reductions, no atomics
// (kernels/execution_kernels.cuh). Function objects must be trivially copyable with an
// RLCORE_HD (or __device__) operator(); accumulators need a default constructor giving zero and
// an RLCORE_HD operator+=.
#pragma once

#include "../../config.hpp"
#include "../../execution.hpp"
#include "../../tensor/memory_space.hpp"
#include "error.cuh"
#include "kernels/execution_kernels.cuh"
#include "memory.cuh"

#include <cuda_runtime.h>
#include <type_traits>
#include <utility>

namespace rlcore {

template <>
struct execution_context<device_space> {
  using space = device_space;

  cudaStream_t stream = nullptr;                                    ///< every launch and copy
  cuda::memory_resource resource = cuda::default_memory_resource(); ///< temporary memory

  /// An owning, zero-filled buffer of n T in device memory (freed on `stream`).
  template <class T>
  [[nodiscard]] cuda::device_buffer<T> allocate(index_t n) const {
    return cuda::device_buffer<T>(n, stream, resource);
  }

  /// f(i) for i in [0, n), any order, asynchronous.
  template <class F>
  void for_each(index_t n, F&& f) const {
    if (n <= 0) {
      return;
    }
    using source = cuda::detail::index_source<std::decay_t<F>>;
    cuda::detail::for_each_kernel<<<cuda::detail::grid_for(n, cuda::detail::max_grid_blocks),
                                    cuda::detail::block_threads, 0, stream>>>(n, source{f});
    RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::for_each_kernel");
  }

  /// init + sum_i f(i) (deterministic); waits for the result.
  template <class Acc, class F>
  [[nodiscard]] Acc reduce(index_t n, Acc init, F&& f) const {
    using source = cuda::detail::index_source<std::decay_t<F>>;
    return reduce_source(n, std::move(init), source{f});
  }

  /// f(i, t) for every token slot of the layout (valid or not), any order, asynchronous.
  template <class Layout, class F>
  void for_each_token(const Layout& layout, F&& f) const {
    const index_t n = layout.token_slots();
    if (n <= 0) {
      return;
    }
    using source = cuda::detail::token_source<Layout, std::decay_t<F>>;
    cuda::detail::for_each_kernel<<<cuda::detail::grid_for(n, cuda::detail::max_grid_blocks),
                                    cuda::detail::block_threads, 0, stream>>>(n, source{layout, f});
    RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::for_each_kernel (tokens)");
  }

  /// init + sum over every token slot of f(i, t) (deterministic); waits for the result.
  template <class Layout, class Acc, class F>
  [[nodiscard]] Acc reduce_tokens(const Layout& layout, Acc init, F&& f) const {
    using source = cuda::detail::token_source<Layout, std::decay_t<F>>;
    return reduce_source(layout.token_slots(), std::move(init), source{layout, f});
  }

  /// out[i] = sum_t f(i, t) for every row (out: device memory of rows() Acc), one block per row,
  /// deterministic, asynchronous.
  template <class Layout, class Acc, class F>
  void reduce_rows(const Layout& layout, Acc* out, F&& f) const {
    const index_t rows = layout.rows();
    if (rows <= 0) {
      return;
    }
    const auto grid = static_cast<unsigned>(
        rows < cuda::detail::max_grid_blocks ? rows : cuda::detail::max_grid_blocks);
    cuda::detail::reduce_rows_kernel<<<grid, cuda::detail::block_threads, 0, stream>>>(
        layout, out, std::decay_t<F>(f));
    RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::reduce_rows_kernel");
  }

  /// Reverse scan of each row over the monoid of `identity` (contract in execution.hpp): one
  /// block per row (grid-stride over rows), tiles of 1024 tokens (256 threads x 4) from the row's
  /// end, cub::BlockScan::ExclusiveScan with `combine` and a running prefix across tiles (a
  /// fixed tree: the same bits on every run); out(i, t, exclusive, combine(exclusive,
  /// element(i, t))) for every token slot. M: trivially copyable. Asynchronous.
  template <class Layout, class M, class Element, class Combine, class Out>
  void reverse_scan_rows(const Layout& layout, const M& identity, Element&& element,
                         Combine&& combine, Out&& out) const {
    const index_t rows = layout.rows();
    if (rows <= 0) {
      return;
    }
    const auto grid = static_cast<unsigned>(
        rows < cuda::detail::max_grid_blocks ? rows : cuda::detail::max_grid_blocks);
    cuda::detail::reverse_scan_rows_kernel<<<grid, cuda::detail::block_threads, 0, stream>>>(
        layout, identity, std::decay_t<Element>(element), std::decay_t<Combine>(combine),
        std::decay_t<Out>(out));
    RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::reverse_scan_rows_kernel");
  }

  /// Per row, t = len-1 .. 0: (a, b) = coeff(i, t); c' = a * c + b; out(i, t, c, c'); c = c'
  /// (c = 0 at the row's end): reverse_scan_rows over affine_map<C> (C: the type of coeff's
  /// second), whose exclusive / inclusive b are c / c'. Asynchronous.
  template <class Layout, class Coeff, class Out>
  void reverse_affine_scan_rows(const Layout& layout, Coeff&& coeff, Out&& out) const {
    using C = std::remove_cvref_t<decltype(coeff(index_t{0}, index_t{0}).second)>;
    reverse_scan_rows(layout, affine_map<C>{},
                      rlcore::detail::affine_scan_element<C, std::decay_t<Coeff>>{coeff},
                      affine_then{}, rlcore::detail::affine_scan_out<C, std::decay_t<Out>>{out});
  }

  /// Copies n elements from device memory to host memory; waits for them.
  template <class T>
  void copy_to_host(const T* src, index_t n, T* dst) const {
    if (n <= 0) {
      return;
    }
    RLCORE_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * sizeof(T),
                                      cudaMemcpyDeviceToHost, stream));
    RLCORE_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  /// The length of the `partials` buffer that reduce_into needs for n values.
  [[nodiscard]] static index_t reduce_partials(index_t n) {
    return n > 0 ? index_t{cuda::detail::grid_for(n, cuda::detail::reduce_max_blocks)} : 0;
  }

  /// *out = sum of the n device values (n <= 0: Acc{}), asynchronous, in reduce's fixed order
  /// (Acc{} + *out has reduce's bits); partials: reduce_partials(n) device values of scratch.
  template <class Acc>
  void reduce_into(index_t n, const Acc* values, Acc* partials, Acc* out) const {
    enqueue_reduce(n, cuda::detail::array_source<Acc>{values}, partials, out);
  }

private:
  template <class Acc, class Source>
  void enqueue_reduce(index_t n, const Source& source, Acc* partials, Acc* out) const {
    const index_t grid = reduce_partials(n);
    if (grid > 0) {
      cuda::detail::reduce_partials_kernel<Acc>
          <<<static_cast<unsigned>(grid), cuda::detail::block_threads, 0, stream>>>(n, source,
                                                                                    partials);
      RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::reduce_partials_kernel");
    }
    cuda::detail::reduce_final_kernel<Acc>
        <<<1, cuda::detail::block_threads, 0, stream>>>(grid, partials, out);
    RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::reduce_final_kernel");
  }

  template <class Acc, class Source>
  Acc reduce_source(index_t n, Acc init, const Source& source) const {
    if (n <= 0) {
      return init;
    }
    const index_t grid = reduce_partials(n);
    auto scratch = allocate<Acc>(grid + 1);
    enqueue_reduce(n, source, scratch.data(), scratch.data() + grid);
    Acc total{};
    copy_to_host(scratch.data() + grid, 1, &total);
    init += total;
    return init;
  }
};

using device_context = execution_context<device_space>;

} // namespace rlcore
