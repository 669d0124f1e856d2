// Self-registration of the ops: each op's .cpp adds its register function (the m.def calls of its
// Python-visible functions) once, at file scope, with MMLOSS_REGISTER_OP(fn); module.cpp calls them
// all when Python imports the module. Adding an op's C++ needs no edit outside its own file.
#pragma once

#include <torch/extension.h>

#include <vector>

namespace mmloss_ext {

using RegisterFn = void (*)(pybind11::module_&);

// the register functions of every op linked into the module (function-local: filled by the
// ops' static initialisers, whatever their order, before the module's init function runs).
// Hidden: an inline function's static is otherwise one process-wide (GNU unique) symbol, and a
// second build loaded beside the first (a stale one, then one compiled on first use) would add
// its ops to the first's list.
__attribute__((visibility("hidden"))) inline std::vector<RegisterFn>& registered_ops() {
  static std::vector<RegisterFn> fns;
  return fns;
}

struct OpRegistration {
  explicit OpRegistration(RegisterFn fn) { registered_ops().push_back(fn); }
};

}  // namespace mmloss_ext

// at file scope, once per op: `MMLOSS_REGISTER_OP(register_dice);`
#define MMLOSS_REGISTER_OP(fn) \
  static const ::mmloss_ext::OpRegistration mmloss_ext_op_registration_##fn { fn }
