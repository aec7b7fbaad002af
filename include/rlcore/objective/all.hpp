// Every objective: policy losses (fused with KL penalty and entropy bonus), GRPO, KL penalties,
// value loss, entropy bonus, aggregation, and log-probs / entropy / KL from logits.
#pragma once

#include "aggregate.hpp"
#include "entropy_bonus.hpp"
#include "grpo.hpp"
#include "kl_penalty.hpp"
#include "logits.hpp"
#include "logits_policy.hpp"
#include "metrics.hpp"
#include "policy.hpp"
#include "value_loss.hpp"
