// The CUDA backend, all of it: include this (from a .cu translation unit) before the generic
// algorithm headers (advantage/, objective/) to run them on device views.
#pragma once

#include "error.cuh"
#include "execution.cuh"
#include "layout.cuh"
#include "memory.cuh"
#include "tensor.cuh"
