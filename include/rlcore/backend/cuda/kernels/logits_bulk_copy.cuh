// Bulk (TMA) copies from global to shared memory with mbarrier completion, sm_90, for the logits
// cluster kernel: one thread issues every copy of a CTA's slice at once, so the whole slice is in
// flight without holding registers, and the other threads wait per chunk. A barrier completes once
// per row loaded into its buffer, its phase parity alternating. Also the cluster exchange's
// primitives: st.async stores into another CTA's shared memory that complete bytes on its
// mbarrier, and the relaxed cluster barrier. Private: include logits.cuh.
#pragma once

#include <cstdint>

namespace rlcore::cuda::detail {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900

__device__ inline unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

/// Initialises an mbarrier expecting one arrival (the issuing thread's arrive.expect_tx).
__device__ inline void barrier_init(std::uint64_t* barrier) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_address(barrier)) : "memory");
}

/// Makes the initialised barriers visible to the async proxy (the bulk copies).
__device__ inline void barrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

/// The issuing thread's arrival, announcing `bytes` to be completed by bulk copies.
__device__ inline void barrier_expect_bytes(std::uint64_t* barrier, unsigned bytes) {
  asm volatile(
      "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(barrier)),
      "r"(bytes)
      : "memory");
}

/// Copies `bytes` (a multiple of 16, both addresses 16-byte aligned) from global `source` to this
/// CTA's shared `destination`, completing them on `barrier`.
__device__ inline void bulk_copy_to_shared(void* destination, const void* source, unsigned bytes,
                                           std::uint64_t* barrier) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(shared_address(destination)),
      "l"(source), "r"(bytes), "r"(shared_address(barrier))
      : "memory");
}

/// Waits until the barrier's phase with parity `parity` completed (every expected byte arrived).
__device__ inline void barrier_wait_parity(std::uint64_t* barrier, unsigned parity) {
  asm volatile("{\n"
               ".reg .pred done;\n"
               "wait_loop:\n"
               "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
               "@!done bra wait_loop;\n"
               "}\n" ::"r"(shared_address(barrier)),
               "r"(parity)
               : "memory");
}

/// The same CTA-local shared address `local` in the CTA of rank `rank` of the cluster (mapa).
__device__ inline unsigned cluster_shared_address(unsigned local, unsigned rank) {
  unsigned remote = 0;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  return remote;
}

/// Stores 16 bytes (`words`) at `remote` (a cluster shared address, 16-byte aligned), completing
/// 16 bytes on the barrier at cluster shared address `remote_barrier` (st.async: no fence).
__device__ inline void store_remote_async(unsigned remote, const uint4& words,
                                          unsigned remote_barrier) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, "
               "%4}, [%5];" ::"r"(remote),
               "r"(words.x), "r"(words.y), "r"(words.z), "r"(words.w), "r"(remote_barrier)
               : "memory");
}

/// Stores 4 bytes at `remote`, completing 4 bytes on `remote_barrier` (as store_remote_async).
__device__ inline void store_remote_async(unsigned remote, unsigned word, unsigned remote_barrier) {
  asm volatile(
      "st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];" ::"r"(remote),
      "r"(word), "r"(remote_barrier)
      : "memory");
}

/// Every thread of the CTA arrives at the cluster barrier without memory ordering (after
/// barrier_init_fence, the barriers' initialisation is what it publishes).
__device__ inline void cluster_arrive_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}

/// Waits until every thread of the cluster arrived (after cluster_arrive_relaxed).
__device__ inline void cluster_wait() {
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
}

#endif

} // namespace rlcore::cuda::detail
