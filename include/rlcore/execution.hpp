// The execution context: the only thing a generic algorithm knows about the hardware.
//
// A generic algorithm (advantage/, objective/) is written once against these primitives and
// runs on whatever backend provides `execution_context<Space>` for the layout's memory space:
//
//   ctx.for_each(n, f)                 f(i) for i in [0, n)                   (any order)
//   ctx.reduce(n, init, f)             init + sum_i f(i)                      (deterministic)
//   ctx.for_each_token(layout, f)      f(i, t) for every token slot            (any order)
//   ctx.reduce_tokens(layout, init, f) init + sum over slots of f(i, t)        (deterministic)
//   ctx.reduce_rows(layout, out, f)    out[i] = sum_t f(i, t)                  (deterministic)
//   ctx.reverse_affine_scan_rows(layout, coeff, out)
//                                      per row, t = len-1 .. 0: (a, b) = coeff(i, t) (a pair);
//                                      c' = a * c + b; out(i, t, c, c'); c = c' (c = 0 at the end)
//   ctx.allocate<T>(n)                 an owning buffer of n T in the context's memory space
//   ctx.copy_to_host(src, n, dst)      n values from context memory to host memory
//
// f is a function object callable on the backend's processors (mark its operator() RLCORE_HD and
// prefer named structs to lambdas, so that nvcc needs no extended-lambda flag). Sums use the
// accumulator's operator+= and must be bitwise reproducible run to run. "Any order" primitives
// must not be used where two calls write the same element.
//
// The host backend is <rlcore/backend/host/execution.hpp> (always available); the CUDA backend is
// <rlcore/backend/cuda/execution.cuh>. A new backend provides a specialisation for its memory
// space.
#pragma once

#include "tensor/memory_space.hpp"

namespace rlcore {

/// Specialised by each backend for its memory space (see the header comment).
template <memory_space Space>
struct execution_context;

} // namespace rlcore
