// Everything computed from logits (issue #3), on any backend that provides execution_context:
//   token_log_probs / token_log_probs_backward         logits_token.hpp (log-probs, entropy)
//   full_kl_from_logits / full_kl_from_logits_backward logits_kl.hpp    (KL(pi || ref) over V)
// The policy / GRPO loss straight from logits is in logits_policy.hpp (it pulls in policy.hpp).
// Options (temperature, accumulate vs overwrite, non-finite policy): logits_common.hpp.
// The scalar and per-row formulas, shared with the CUDA kernels: math/softmax.hpp.
#pragma once

#include "../backend/host/execution.hpp" // the default (host) execution context
#include "logits_common.hpp"
#include "logits_kl.hpp"
#include "logits_token.hpp"
