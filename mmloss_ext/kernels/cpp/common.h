// Tensor-level helpers shared by the ops' drivers: optional inputs, input checks, prefetching,
// the rows of a parallel task.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

namespace mmloss_ext {

// the data of an optional input, or nullptr where it is None or undefined
template <typename T>
inline const T* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

// the dtypes an op takes beside pred's for its other inputs (a bit set)
enum OtherDtypes : unsigned { kPredDtypeOnly = 0, kAlsoLong = 1, kAlsoDouble = 2 };

// pred: a contiguous CPU tensor of at least min_dim dimensions (exactly, with `exact`); the given
// others: contiguous CPU tensors of pred's dtype or one that `also` allows (labels, saved sums).
// `who` names the kernel in the message.
inline void check_inputs(const char* who, const at::Tensor& x, int64_t min_dim, bool exact,
                         std::initializer_list<c10::optional<at::Tensor>> others, unsigned also) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), who, ": pred must be a contiguous CPU tensor");
  TORCH_CHECK(exact ? x.dim() == min_dim : x.dim() >= min_dim, who, ": pred has ", x.dim(), " dimensions, expected ",
              min_dim, exact ? "" : " or more");
  for (const auto& t : others) {
    if (!t.has_value() || !t->defined()) continue;
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous(), who, ": inputs must be contiguous CPU tensors");
    const at::ScalarType s = t->scalar_type();
    TORCH_CHECK(s == x.scalar_type() || ((also & kAlsoLong) && s == at::kLong) ||
                    ((also & kAlsoDouble) && s == at::kDouble),
                who, ": dtype mismatch (", s, " beside pred's ", x.scalar_type(), ")");
  }
}

// software prefetch 4 KiB ahead of a stream (one line per vector): the hardware prefetchers stop at
// page boundaries, which leaves the long per-element formulas waiting on memory (measured: ~25%)
template <typename T>
inline void prefetch_read(const T* p) {
  __builtin_prefetch(reinterpret_cast<const char*>(p) + 4096, 0, 3);
}
template <typename T>
inline void prefetch_write(T* p) {
  __builtin_prefetch(reinterpret_cast<char*>(p) + 4096, 1, 3);
}

// the rows of `cols` values each parallel task takes: about `elements` values, at least one row
inline int64_t rows_per_task(int64_t cols, int64_t elements) {
  return std::max<int64_t>(1, elements / std::max<int64_t>(cols, 1));
}

}  // namespace mmloss_ext
