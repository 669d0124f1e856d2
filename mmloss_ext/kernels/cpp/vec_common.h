// Vector helpers shared by the ops' kernels (and what differs between the torch releases' ATen
// headers).
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

// sign(d) per lane: 1, 0 or -1
template <typename T>
inline at::vec::Vectorized<T> sign_of(const at::vec::Vectorized<T>& d) {
  using V = at::vec::Vectorized<T>;
  const V zero(T(0)), one(T(1));
  return V::blendv(zero, one, d > zero) - V::blendv(zero, one, d < zero);
}

// p = sigmoid(x) and p (1 - p) from e = exp(-|x|) and r = 1 / (1 + e): p = r (x >= 0) or e r, and
// p (1 - p) = e r^2 (one exp for both, no cancellation)
template <typename T>
inline void sigmoid_from_exp(const at::vec::Vectorized<T>& x, const at::vec::Vectorized<T>& e,
                             const at::vec::Vectorized<T>& r, at::vec::Vectorized<T>& p,
                             at::vec::Vectorized<T>& pq) {
  using V = at::vec::Vectorized<T>;
  const V er = e * r;
  p = V::blendv(er, r, x >= V(T(0)));
  pq = er * r;
}

}  // namespace mmloss_ext
