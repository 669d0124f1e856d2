// The extension module mmloss_ext._fused: its description and what it was built with; every op
// (kernels/<op>/<op>.cpp) adds its functions through registry.h.
#include <torch/extension.h>

#include "abi.h"
#include "registry.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmloss_ext fused CPU kernels (see mmloss_ext/kernels/)";
  // what it was built with (mmloss_ext/core/abi.py): mmloss_ext/kernels/backends.py refuses a stale build
  m.attr("abi") = mmloss_ext::kAbi;
  m.attr("interface") = mmloss_ext::interface_report();
#if defined(CPU_CAPABILITY_AVX512)
  m.attr("isa") = "AVX512";
#elif defined(CPU_CAPABILITY_AVX2)
  m.attr("isa") = "AVX2";
#else
  m.attr("isa") = "DEFAULT";
#endif
  for (const mmloss_ext::RegisterFn fn : mmloss_ext::registered_ops()) fn(m);
}
