// Placeholder: being written.
#include "hutch/policy/policy.hpp"
