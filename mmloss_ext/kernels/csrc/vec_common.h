// Vector helpers shared by the kernels of fused.cpp and dense.cpp (and what differs between the
// torch releases' ATen headers).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>
#include <utility>

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

// whether ATen's Vectorized has the 20-ulp exp (torch 2.2+; torch 2.1's has only the 1-ulp one)
template <typename V, typename = void>
struct HasExpU20 : std::false_type {};
template <typename V>
struct HasExpU20<V, std::void_t<decltype(std::declval<const V&>().exp_u20())>> : std::true_type {};

// exp: 20 ulp in float32 (inductor's softmax exp) where ATen has it, else its 1-ulp exp; exact in
// float64
template <typename T>
inline at::vec::Vectorized<T> fast_exp(const at::vec::Vectorized<T>& x) {
  if constexpr (std::is_same_v<T, float> && HasExpU20<at::vec::Vectorized<T>>::value) {
    return x.exp_u20();
  } else {
    return x.exp();
  }
}

}  // namespace mmloss_ext
