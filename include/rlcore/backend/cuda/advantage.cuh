// Fused GAE on the GPU: rlcore::cuda::gae_advantages has the contract of rlcore::gae_advantages
// (advantage/gae.hpp: same inputs, options, validation, multi-turn masks, outputs) and runs as ONE
// reverse scan per row over the affine maps of GAE's one-number carry c_t = V_t + lambda A_t
// (math/advantage.hpp: gae_carry_map, gae_carry_then), with no per-token scratch: 17 B/token for
// fp32 r, V, A, returns and a 1-byte mask, instead of the generic algorithm's two scans and
// scratch buffer.
// Kernel: kernels/gae_kernels.cuh (a thread-block cluster of CTAs per row on sm_90, one block per
// row elsewhere; carries in double; bitwise reproducible).
//
// Device memory: every per-token tensor and the layout must be in device memory.
#pragma once

#include "../../advantage/gae.hpp"
#include "execution.cuh"
#include "kernels/gae_kernels.cuh"
#include "launch.cuh"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace rlcore::cuda {
namespace detail {

/// Launch shape of the fused GAE kernel (a test and benchmark knob). Every shape computes the
/// same recurrences; the result depends on `items` alone (the association of the double-precision
/// scan over pieces of 256 x items tokens): the grid, the cluster size and the stream never
/// change a bit of it.
struct gae_launch {
  int items = 8;                ///< tokens per thread per chunk of 256 threads: 8 or 16
  index_t max_blocks = 1 << 16; ///< CTAs at most: grid = min(rows, max(1, max_blocks / cluster))
                                ///< groups of `cluster` CTAs
  int cluster = 0;              ///< CTAs per row: 0 chooses (from the mean row length), 1 one block
                                ///< per row, 2 / 4 / 8 a thread-block cluster (1 where the device
                                ///< or the kernel's code cannot run clusters)
  int access = 0; ///< 0 chooses (gae_access_of), 1 every access through the views (per element),
                  ///< 2 the shifted 16-byte path where the views allow it (else per element)
  bool dependent = true; ///< launched as the programmatic dependent of the stream's previous
                         ///< launch (sm_90+): scheduled while that grid ends, waits on the device
};

/// True when a per-token view can take the shifted 16-byte path: fp32 with unit column stride
/// (a padded matrix_view or a packed flat buffer) and 4-byte aligned data; rows may start anywhere.
template <class View>
bool float_rows(const View& v) {
  if constexpr (std::is_same_v<typename View::value_type, float>) {
    if constexpr (requires { v.col_stride; }) {
      return v.col_stride == 1 && reinterpret_cast<std::uintptr_t>(v.data) % 4 == 0;
    } else if constexpr (requires { v.flat.stride; }) {
      return v.flat.stride == 1 && reinterpret_cast<std::uintptr_t>(v.flat.data) % 4 == 0;
    } else {
      return false;
    }
  } else {
    return false;
  }
}

/// True when the layout's mask can be read in 4-byte words on the shifted path: none, or 1-byte
/// with unit column stride (padded) / unit stride (packed).
template <class Layout>
bool byte_mask_rows(const Layout& layout) {
  const auto& m = layout.mask;
  if (m.data == nullptr) {
    return true;
  }
  if constexpr (sizeof(typename Layout::mask_type) != 1) {
    return false;
  } else if constexpr (Layout::is_packed) {
    return m.stride == 1;
  } else {
    return m.col_stride == 1;
  }
}

/// The kernel's access to the bound views (gae_access): aligned when the padded rows allow aligned
/// 16-byte accesses (mask4_rows, float4_rows), else shifted when every view is fp32 with unit
/// column stride and the mask 1-byte or none, else element. `asked`: gae_launch::access.
template <class Layout, class R, class V, class A, class Ret>
gae_access gae_access_of(const Layout& layout, const R& r, const V& v, const A& a, const Ret& ret,
                         int asked) {
  if (asked == 1) {
    return gae_access::element;
  }
  if (asked != 2 && mask4_rows(layout) && float4_rows(r) && float4_rows(v) && float4_rows(a)
      && float4_rows(ret)) {
    return gae_access::aligned;
  }
  if (byte_mask_rows(layout) && float_rows(r) && float_rows(v) && float_rows(a)
      && float_rows(ret)) {
    return gae_access::shifted;
  }
  return gae_access::element;
}

/// True when `kernel` can run as clusters of `size` CTAs of `threads` on the current device:
/// cluster launch support, sm_90+ code compiled from sm_90+ PTX (the cluster path of the kernel is
/// compiled only there), at least one resident cluster. `cache` (one per kernel instantiation)
/// keeps the answer per device.
template <class Kernel>
bool gae_cluster_ready(Kernel* kernel, int size, int threads,
                       std::atomic<long long> (&cache)[cached_devices]) {
  return cached_per_device(
             cache,
             [&](int device) {
               int cluster_launch = 0;
               RLCORE_CUDA_CHECK(
                   cudaDeviceGetAttribute(&cluster_launch, cudaDevAttrClusterLaunch, device));
               cudaFuncAttributes attributes{};
               RLCORE_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
               if (cluster_launch == 0 || attributes.binaryVersion < 90
                   || attributes.ptxVersion < 90) {
                 return 2LL;
               }
               kernel_launch l{};
               l.grid = static_cast<unsigned>(size);
               l.threads = static_cast<unsigned>(threads);
               l.cluster = static_cast<unsigned>(size);
               cudaLaunchAttribute attributes_of_launch[2]{};
               const cudaLaunchConfig_t config = launch_config(l, attributes_of_launch);
               int clusters = 0;
               RLCORE_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
               return clusters > 0 ? 1LL : 2LL;
             })
         == 1;
}

/// Launches gae_rows_kernel<Threads, Items, Cluster, Access> over `groups` groups of Cluster
/// CTAs on `stream`. Returns false, launching nothing, when Cluster > 1 and clusters cannot run.
template <int Threads, int Items, int Cluster, gae_access Access, class Layout, class R, class V,
          class A, class Ret>
bool launch_gae_kernel(const Layout& layout, const R& r, const V& v, const A& a, const Ret& ret,
                       double gamma, double lambda, index_t groups, bool dependent,
                       cudaStream_t stream) {
  auto* kernel = gae_rows_kernel<Threads, Items, Cluster, Access, double, Layout, R, V, A, Ret>;
  kernel_launch l{};
  l.grid = static_cast<unsigned>(groups * Cluster);
  l.threads = Threads;
  l.stream = stream;
  l.cluster = Cluster > 1 ? Cluster : 0;
  l.dependent = dependent && dependent_launch_supported();
  if constexpr (Cluster > 1) {
    static std::atomic<long long> ready[cached_devices]{}; // 1 ready, 2 not ready
    if (!gae_cluster_ready(kernel, Cluster, Threads, ready)) {
      return false;
    }
  }
  launch_kernel(kernel, l, layout, r, v, a, ret, gamma, lambda);
  RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::gae_rows_kernel");
  return true;
}

/// launch_gae_kernel with `access` (gae_access_of); the 16-byte paths only where every element
/// type is fp32 (aligned: padded layouts only).
template <int Threads, int Items, int Cluster, class Layout, class R, class V, class A, class Ret>
bool launch_gae_rows(const Layout& layout, const R& r, const V& v, const A& a, const Ret& ret,
                     double gamma, double lambda, index_t groups, gae_access access, bool dependent,
                     cudaStream_t stream) {
  constexpr bool fp32 =
      std::is_same_v<
          typename R::value_type,
          float> && std::is_same_v<typename V::value_type, float> && std::is_same_v<typename A::value_type, float> && std::is_same_v<typename Ret::value_type, float>;
  if constexpr (fp32 && !Layout::is_packed) {
    if (access == gae_access::aligned) {
      return launch_gae_kernel<Threads, Items, Cluster, gae_access::aligned>(
          layout, r, v, a, ret, gamma, lambda, groups, dependent, stream);
    }
  }
  if constexpr (fp32) {
    if (access == gae_access::shifted) {
      return launch_gae_kernel<Threads, Items, Cluster, gae_access::shifted>(
          layout, r, v, a, ret, gamma, lambda, groups, dependent, stream);
    }
  }
  return launch_gae_kernel<Threads, Items, Cluster, gae_access::element>(
      layout, r, v, a, ret, gamma, lambda, groups, dependent, stream);
}

/// CTAs per row chosen for `rows` rows of `mean_length` tokens in chunks of `chunk_tokens`, on a
/// device of `sms` SMs where `resident` CTAs fit at once: the smallest power of two <=
/// gae_max_cluster that gives every SM at least 1.5 CTAs on average (rows x size >= 1.5 sms),
/// doubled only while all CTAs still fit at once (rows x size <= resident) and all are busy in a
/// mean row (size chunks <= the mean length). Measured on the H200 (132 SMs, 528 resident CTAs;
/// docs/benchmarks.md, 2^21 tokens): the best size was 8 for 16 and 32 rows, 4 for 64, 2 for 128
/// and 192, 1 from 256 rows on; this rule picks exactly these.
inline int gae_auto_cluster(index_t rows, index_t mean_length, index_t chunk_tokens, index_t sms,
                            index_t resident) {
  int size = 1;
  while (size < gae_max_cluster && 2 * rows * size < 3 * sms && rows * (2 * size) <= resident
         && (2 * size) * chunk_tokens <= mean_length) {
    size *= 2;
  }
  return size;
}

/// SMs of the current device and CTAs of gae_rows_kernel<Threads, Items, 1, ...> resident on it at
/// once (SMs x blocks per SM), cached per kernel and device.
struct gae_device_capacity {
  index_t sms = 1;
  index_t resident = 1;
};
template <int Threads, int Items, class Kernel>
gae_device_capacity gae_capacity(Kernel* kernel) {
  static std::atomic<long long> cache[cached_devices]{}; // sms << 32 | resident
  const long long known = cached_per_device(cache, [&](int device) {
    int sms = 0;
    int per_sm = 0;
    RLCORE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    RLCORE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, Threads, 0));
    const long long sm_count = sms > 0 ? sms : 1;
    return sm_count << 32 | sm_count * (per_sm > 0 ? per_sm : 1);
  });
  return {static_cast<index_t>(known >> 32), static_cast<index_t>(known & 0xFFFFFFFFLL)};
}

/// Enqueues the fused GAE kernel of `launch`'s shape with Items tokens per thread: the asked
/// cluster size, else (clusters cannot run) one block per row.
template <int Items, class Layout, class R, class V, class A, class Ret>
void launch_gae_items(const Layout& layout, const R& r, const V& v, const A& a, const Ret& ret,
                      double gamma, double lambda, const gae_launch& launch, gae_access access,
                      cudaStream_t stream) {
  constexpr int threads = 256;
  const index_t rows = layout.rows();
  int cluster = launch.cluster;
  if (cluster <= 0) {
    const gae_device_capacity capacity = gae_capacity<threads, Items>(
        gae_rows_kernel<threads, Items, 1, gae_access::element, double, Layout, R, V, A, Ret>);
    cluster = gae_auto_cluster(rows, layout.token_slots() / rows, index_t{threads} * Items,
                               capacity.sms, capacity.resident);
  }
  const index_t cap = launch.max_blocks < 1 ? 1 : launch.max_blocks;
  const auto groups_for = [&](int size) {
    const index_t most = cap / size < 1 ? 1 : cap / size;
    return rows < most ? rows : most;
  };
  const auto run = [&](auto size_constant) {
    constexpr int size = decltype(size_constant)::value;
    return launch_gae_rows<threads, Items, size>(
        layout, r, v, a, ret, gamma, lambda, groups_for(size), access, launch.dependent, stream);
  };
  bool launched = false;
  if (cluster >= 8) {
    launched = run(std::integral_constant<int, 8>{});
  } else if (cluster >= 4) {
    launched = run(std::integral_constant<int, 4>{});
  } else if (cluster >= 2) {
    launched = run(std::integral_constant<int, 2>{});
  }
  if (!launched) {
    run(std::integral_constant<int, 1>{});
  }
}

/// Validates and binds the arguments of gae_advantages, then enqueues the fused scan (and the
/// whitening, which waits for its statistics) on ctx.stream.
template <class Layout, class Rewards, class Values, class Advantages, class Returns>
void enqueue_gae(const Layout& layout, const Rewards& token_rewards, const Values& values,
                 Advantages& advantages_out, Returns& returns_out, const gae_options& options,
                 const device_context& ctx, const gae_launch& launch = {}) {
  constexpr const char* function = "gae_advantages";
  rlcore::detail::require_unit_interval(function, "options.gamma", options.gamma);
  rlcore::detail::require_unit_interval(function, "options.lambda", options.lambda);
  rlcore::detail::validate_whiten(function, "options.whiten_kind", "options.whiten_eps",
                                  options.whiten_kind, options.whiten_eps);
  const auto r = layout.bind(function, "token_rewards", token_rewards);
  const auto v = layout.bind(function, "values", values);
  const auto a = layout.bind(function, "advantages_out", advantages_out);
  const auto ret = layout.bind(function, "returns_out", returns_out);
  const index_t rows = layout.rows();
  if (rows > 0) {
    const gae_access access = gae_access_of(layout, r, v, a, ret, launch.access);
    if (launch.items == 16) {
      launch_gae_items<16>(layout, r, v, a, ret, options.gamma, options.lambda, launch, access,
                           ctx.stream);
    } else {
      launch_gae_items<8>(layout, r, v, a, ret, options.gamma, options.lambda, launch, access,
                          ctx.stream);
    }
  }
  if (options.whiten) {
    rlcore::detail::whiten_tokens(function, "options.whiten_kind", layout, a, a,
                                  options.whiten_kind, options.whiten_eps, ctx);
  }
}

} // namespace detail

/// Fused GAE advantages and returns on device tensors: the contract of rlcore::gae_advantages
/// (advantage/gae.hpp: formula, shapes, options, errors), backwards over the valid tokens of
/// each row, masked tokens skipped (both carries pass through), masked outputs 0:
///   A_t = (r_t - V_t) + gamma * V_next + gamma * lambda * A_next,   returns_t = A_t + V_t,
/// V_next, A_next of the next valid token of the row (0 past the last). One composite scan per
/// row (header comment): a thread-block cluster of up to 8 CTAs per row on sm_90 (chosen from the
/// batch shape), carries in double, outputs rounded once, bitwise reproducible.
///   layout          device padded or packed layout (rlcore::cuda::padded / packed)
///   token_rewards   device per-token r;  values: device per-token V
///   advantages_out  device per-token A (whitened over the valid tokens when options.whiten)
///   returns_out     device per-token A + V (never whitened)
///   options         rlcore::gae_options (gamma = lambda = 1, whiten off by default)
///   ctx             stream and memory resource
/// Asynchronous on ctx.stream unless options.whiten (the whitening waits for its statistics).
/// Fastest with fp32 tensors of unit column stride: 16-byte loads and stores at any row start,
/// padded or packed; fastest of all with a padded T a multiple of 4 and 16-byte aligned rows (no
/// shuffles into place); other views are read and written element by element.
template <batch_layout Layout, class Rewards, class Values, class Advantages, class Returns>
requires std::same_as<typename Layout::space, device_space>
void gae_advantages(const Layout& layout, const Rewards& token_rewards, const Values& values,
                    Advantages&& advantages_out, Returns&& returns_out,
                    const gae_options& options = {}, const device_context& ctx = {}) {
  detail::enqueue_gae(layout, token_rewards, values, advantages_out, returns_out, options, ctx);
}

/// CUB-style two-phase form of gae_advantages: with d_temp == nullptr sets temp_bytes and
/// returns; otherwise validates and enqueues on ctx.stream. The fused scan needs no temporary
/// storage: temp_bytes is 1 (CUB's convention, so that an allocation of it is not null); the
/// whitening, when asked for, takes its own from ctx.resource.
template <batch_layout Layout, class Rewards, class Values, class Advantages, class Returns>
requires std::same_as<typename Layout::space, device_space>
void gae_advantages(void* d_temp, std::size_t& temp_bytes, const Layout& layout,
                    const Rewards& token_rewards, const Values& values, Advantages&& advantages_out,
                    Returns&& returns_out, const gae_options& options, const device_context& ctx) {
  constexpr std::size_t needed = 1;
  if (d_temp == nullptr) {
    temp_bytes = needed;
    return;
  }
  rlcore::detail::require(temp_bytes >= needed, "gae_advantages", "temp_bytes",
                          "expected at least ", needed, ", got ", temp_bytes);
  detail::enqueue_gae(layout, token_rewards, values, advantages_out, returns_out, options, ctx);
}

} // namespace rlcore::cuda
