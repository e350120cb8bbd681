// Placeholder: being written.
#include "hutch/core/error.hpp"
