// Programmatic dependent launch (sm_90+), device side: a kernel launched as the programmatic
// dependent of the previous launch in its stream (launch_kernel in ../launch.cuh) may be
// scheduled while that grid still runs, so its launch latency overlaps the previous grid's end.
// It must call wait_for_prior_grids() before its first global memory access (read or write);
// allow_dependent_grids() lets its own dependents be scheduled early. Both are no-ops before sm_90
// and in a kernel launched plainly. Private: included by the kernels' headers.
#pragma once

namespace rlcore::cuda::detail {

/// Blocks the calling threads until the grids this grid depends on have completed and their
/// memory operations are visible (griddepcontrol.wait).
__device__ inline void wait_for_prior_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/// Lets the programmatic dependents of this grid be scheduled once every CTA of it has called this
/// or exited (griddepcontrol.launch_dependents); they still wait for this grid's completion
/// before touching memory, so calling it early is safe.
__device__ inline void allow_dependent_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

} // namespace rlcore::cuda::detail
