// Run-time choices between two ways of computing the same result that the CPU's maker decides:
// AVX-512 gathers are fast on Intel's cores and slow on AMD's (ps_roi_pooling.h), MKL runs
// AVX-512 code on Intel's and AVX2 code on AMD's (winograd_conv3x3.cpp). An environment variable
// overrides each choice, so that the tests run both ways on any machine.
#pragma once

#include <cstdlib>

namespace roiops {
namespace cpu {

// True on Intel's cores, false on any other's, unless the environment variable named
// override_variable is set: then whether its value starts with '1'.
inline bool intel_unless_overridden(const char* override_variable) {
  if (const char* forced = std::getenv(override_variable)) {
    return forced[0] == '1';
  }
#if defined(__x86_64__) || defined(__i386__)
  static const bool intel = __builtin_cpu_is("intel");
#else
  static const bool intel = false;
#endif
  return intel;
}

}  // namespace cpu
}  // namespace roiops
