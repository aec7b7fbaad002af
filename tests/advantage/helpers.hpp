// Test helpers shared by the advantage tests.
#pragma once

#include "../common/check_invalid.hpp"
