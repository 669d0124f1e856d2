// Vector helpers shared by the kernels of fused.cpp and dense.cpp.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace mmloss_ext {

// cnt lanes of p (a full vector, or a masked tail)
template <typename T>
inline at::vec::Vectorized<T> load(const T* p, int64_t cnt) {
  using V = at::vec::Vectorized<T>;
  return cnt == V::size() ? V::loadu(p) : V::loadu(p, cnt);
}

// the sum of the lanes, accumulated in double
template <typename T>
inline double hsum(const at::vec::Vectorized<T>& v) {
  T buf[at::vec::Vectorized<T>::size()];
  v.store(buf);
  double s = 0.0;
  for (int64_t i = 0; i < at::vec::Vectorized<T>::size(); ++i) s += double(buf[i]);
  return s;
}

}  // namespace mmloss_ext
