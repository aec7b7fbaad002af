// Every advantage estimator and reward utility (the host backend comes with them).
#pragma once

#include "gae.hpp"
#include "group.hpp"
#include "process.hpp"
#include "reinforce.hpp"
#include "reward.hpp"
#include "scores.hpp"
#include "whiten.hpp"
