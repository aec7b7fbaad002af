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
//   ctx.reverse_scan_rows(layout, identity, element, combine, out)
//                                      per row, a reverse scan over a monoid M (see below):
//                                      later = identity; for t = len-1 .. 0:
//                                      m = element(i, t); total = combine(later, m);
//                                      out(i, t, later, total); later = total
//   ctx.reverse_affine_scan_rows(layout, coeff, out)
//                                      per row, t = len-1 .. 0: (a, b) = coeff(i, t) (a pair);
//                                      c' = a * c + b; out(i, t, c, c'); c = c' (c = 0 at the end);
//                                      reverse_scan_rows over affine_map (the same scan)
//   ctx.allocate<T>(n)                 an owning buffer of n T in the context's memory space
//   ctx.copy_to_host(src, n, dst)      n values from context memory to host memory
//
// reverse_scan_rows: M is a trivially copyable value type, `identity` an M, element(i, t) -> M
// the value of token t of row i, combine(later, earlier) -> M the value of the segment `earlier`
// followed by the segment `later` (the tokens after it): for a row read backwards, combine extends
// the composite of the tokens after t by token t's value on the left of the row. combine must be
// associative, combine(combine(x, y), z) == combine(x, combine(y, z)) (up to rounding for
// floating-point values; the backends associate in different orders, so only exact monoids give
// the same bits on every backend), with combine(identity, m) == combine(m, identity) == m; it
// need not be commutative. out(i, t, exclusive, inclusive) is called once per token slot t < len
// (valid or masked: element and out see masked tokens too) with exclusive = the composite of the
// tokens t + 1 .. len - 1 (identity at the row's last token) and inclusive = combine(exclusive,
// element(i, t)). A backend evaluates element once per token, may call out in any order and
// associates in an order fixed by the layout alone (the same bits run to run).
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

#include "config.hpp"
#include "tensor/memory_space.hpp"

namespace rlcore {

/// Specialised by each backend for its memory space (see the header comment).
template <memory_space Space>
struct execution_context;

/// The affine map c -> a * c + b of reverse_affine_scan_rows' carry, as the monoid value of
/// reverse_scan_rows: the composite of the tokens t .. len - 1 maps the carry at the row's end to
/// the carry at t. Default: the identity (a = 1, b = 0).
template <class C>
struct affine_map {
  C a = C(1); ///< multiplier
  C b = C(0); ///< offset; applied to the carry 0 at the row's end, b is the carry itself
};

/// combine of affine_map for reverse_scan_rows: `earlier` applied after `later`,
///   c -> earlier.a * (later.a * c + later.b) + earlier.b = (earlier.a * later.a,
///                                                           earlier.a * later.b + earlier.b).
struct affine_then {
  template <class C>
  RLCORE_HD affine_map<C> operator()(const affine_map<C>& later,
                                     const affine_map<C>& earlier) const {
    return {earlier.a * later.a, earlier.a * later.b + earlier.b};
  }
};

namespace detail {

/// reverse_affine_scan_rows' element: the pair (a, b) = coeff(i, t) as an affine_map<C>.
template <class C, class Coeff>
struct affine_scan_element {
  Coeff coeff;
  RLCORE_HD affine_map<C> operator()(index_t i, index_t t) const {
    const auto ab = coeff(i, t);
    return {static_cast<C>(ab.first), static_cast<C>(ab.second)};
  }
};

/// reverse_affine_scan_rows' output: the carries (the offsets b of the exclusive and inclusive
/// composites, both applied to the carry 0 at the row's end) handed to out(i, t, c, c').
template <class C, class Out>
struct affine_scan_out {
  Out out;
  RLCORE_HD void operator()(index_t i, index_t t, const affine_map<C>& exclusive,
                            const affine_map<C>& inclusive) const {
    out(i, t, exclusive.b, inclusive.b);
  }
};

} // namespace detail

} // namespace rlcore
