// rlcore: the core library (host backend, no Eigen, no CUDA). Include backend headers separately:
//   <rlcore/backend/eigen/eigen.hpp>   Eigen types as tensors
//   <rlcore/backend/cuda/cuda.cuh>     device memory, Thrust/CUB executors (nvcc only)
#pragma once

#include "backend/host/execution.hpp"
#include "config.hpp"
#include "error.hpp"
#include "execution.hpp"
#include "tensor/concepts.hpp"
#include "tensor/groups.hpp"
#include "tensor/layout.hpp"
#include "tensor/memory_space.hpp"
#include "tensor/views.hpp"
