// rlcore: the whole core library (every estimator, objective and controller, the host backend; no
// Eigen, no CUDA). Include backend headers separately, before this one for CUDA:
//   <rlcore/backend/eigen/eigen.hpp>   Eigen types as tensors
//   <rlcore/backend/cuda/cuda.cuh>     device memory, Thrust/CUB executors (nvcc only)
#pragma once

#include "advantage/all.hpp"
#include "backend/host/execution.hpp"
#include "config.hpp"
#include "control/kl_controller.hpp"
#include "error.hpp"
#include "execution.hpp"
#include "objective/all.hpp"
#include "tensor/concepts.hpp"
#include "tensor/groups.hpp"
#include "tensor/layout.hpp"
#include "tensor/memory_space.hpp"
#include "tensor/views.hpp"
