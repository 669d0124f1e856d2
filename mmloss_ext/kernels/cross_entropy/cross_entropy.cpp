// Fused CPU kernel of the softmax cross-entropy: logits (N, C) and int64 labels (N,); per row the
// max, the log-sum-exp and lse - x[y], times class_weight[y] and an (N,) weight; rows whose label is
// ignore_index give 0. Rows are short (C ~ 80) and stay in L1 between the passes over them. The
// backward (softmax - onehot) * upstream * weight recomputes the row's max and sum of exponentials,
// or takes the (N,) log-sum-exp saved by the forward (`lse`, see ce_forward).
//
// The eager functional in mmloss_ext/losses/ is the spec; this computes the same formula and its
// hand-derived gradient in one pass over memory forward and one backward, vectorised with at::vec
// and parallelised with at::parallel_for.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "../cpp/abi.h"
#include "../cpp/common.h"
#include "../cpp/registry.h"
#include "../cpp/vec_common.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace {

using namespace mmloss_ext;  // the out modes of abi.h, the shared helpers
using at::vec::Vectorized;

// horizontal max and sum in the vector unit (shuffles): a row of the cross-entropy is a few vectors
template <typename T>
inline T max_lanes(const Vectorized<T>& v) {
  return at::vec::vec_reduce_all<T>([](Vectorized<T>& a, Vectorized<T>& b) { return at::vec::maximum(a, b); }, v);
}

template <typename T>
inline T add_lanes(const Vectorized<T>& v) {
  return at::vec::vec_reduce_all<T>([](Vectorized<T>& a, Vectorized<T>& b) { return a + b; }, v);
}


void check_ce(const at::Tensor& x, std::initializer_list<c10::optional<at::Tensor>> others) {
  check_inputs("mmloss_ext fused cross-entropy", x, 2, /*exact=*/true, others, kAlsoLong);
}


// max and log-sum-exp of one row of `cols` values
template <typename T>
inline T row_lse(const T* x, int64_t cols) {
  using V = Vectorized<T>;
  constexpr int64_t vs = V::size();
  const V ninf(-std::numeric_limits<T>::infinity());
  V vmax = ninf;
  for (int64_t c = 0; c < cols; c += vs) {
    const int64_t cnt = std::min(vs, cols - c);
    vmax = at::vec::maximum(vmax, cnt == vs ? V::loadu(x + c) : V::set(ninf, V::loadu(x + c, cnt), cnt));
  }
  const T m = max_lanes(vmax);
  const V vm(m), zero(T(0));
  V acc = zero;
  for (int64_t c = 0; c < cols; c += vs) {
    const int64_t cnt = std::min(vs, cols - c);
    const V e = fast_exp(load(x + c, cnt) - vm);
    acc = acc + (cnt == vs ? e : V::set(zero, e, cnt));
  }
  return m + std::log(add_lanes(acc));
}

inline int64_t ce_grain(int64_t cols) { return rows_per_task(cols, 16384); }

// out_mode kOutTotal: the weighted total (float64 scalar); kOutElements: the weighted loss per row (N,).
// save_lse: also return the (N,) log-sum-exp (else an undefined tensor), for ce_backward.
// The third result says whether a label lies outside [0, C) and is not ignore_index (its row
// counts as ignored): the caller raises its own error (the labels are checked here, in the same
// pass, instead of by separate passes over them).
std::tuple<at::Tensor, at::Tensor, bool> ce_forward(at::Tensor x, at::Tensor labels, c10::optional<at::Tensor> class_weight,
                                              c10::optional<at::Tensor> w, int64_t ignore_index, int64_t out_mode,
                                              bool save_lse) {
  check_ce(x, {labels, class_weight, w});
  check_out_mode(out_mode, /*rows=*/false);
  TORCH_CHECK(labels.scalar_type() == at::kLong && labels.numel() == x.size(0), "mmloss_ext fused: bad labels");
  const int64_t n = x.size(0), cols = x.size(1);
  at::Tensor out =
      out_mode == kOutElements ? at::empty({n}, x.options()) : at::empty({}, x.options().dtype(at::kDouble));
  at::Tensor lse = save_lse ? at::empty({n}, x.options()) : at::Tensor();
  bool bad = false;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_ce_forward", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const int64_t* yp = labels.data_ptr<int64_t>();
    const T* cw = ptr_or_null<T>(class_weight);
    const T* wp = ptr_or_null<T>(w);
    T* o = out_mode == kOutElements ? out.data_ptr<T>() : nullptr;
    T* lp = save_lse ? lse.data_ptr<T>() : nullptr;
    std::atomic<bool> any_bad{false};
    const double total = at::parallel_reduce(0, n, ce_grain(cols), 0.0, [&](int64_t b, int64_t e, double sum) {
      for (int64_t i = b; i < e; ++i) {
        const T* xr = xp + i * cols;
        const int64_t y = yp[i];
        T l = T(0);
        if (y == ignore_index) {
          if (lp != nullptr) lp[i] = T(0);
        } else if (y < 0 || y >= cols) {
          any_bad = true;
          if (lp != nullptr) lp[i] = T(0);
        } else {
          const T s = row_lse(xr, cols);
          if (lp != nullptr) lp[i] = s;
          l = s - xr[y];
          if (cw != nullptr) l *= cw[y];
          if (wp != nullptr) l *= wp[i];
        }
        if (o != nullptr) {
          o[i] = l;
        } else {
          sum += double(l);
        }
      }
      return sum;
    }, std::plus<double>());
    bad = any_bad;
    if (out_mode == kOutTotal) out.fill_(total);
  });
  return {out, lse, bad};
}

// dx[i] = gscale * grow[i] * w[i] * class_weight[y] * (softmax(x[i]) - onehot(y)); 0 for ignored rows.
// lse: the forward's (N,) log-sum-exp, or undefined (recomputed here: max, exponentials written
// into dx and summed, then scaled in place while the row is still in L1).
at::Tensor ce_backward(at::Tensor x, at::Tensor labels, c10::optional<at::Tensor> class_weight, c10::optional<at::Tensor> w,
                       int64_t ignore_index, double gscale, c10::optional<at::Tensor> grow, c10::optional<at::Tensor> lse) {
  check_ce(x, {labels, class_weight, w, grow, lse});
  const int64_t n = x.size(0), cols = x.size(1);
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_ce_backward", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    constexpr int64_t vs = V::size();
    const T* xp = x.data_ptr<T>();
    const int64_t* yp = labels.data_ptr<int64_t>();
    const T* cw = ptr_or_null<T>(class_weight);
    const T* wp = ptr_or_null<T>(w);
    const T* gp = ptr_or_null<T>(grow);
    const T* lp = ptr_or_null<T>(lse);
    T* dp = dx.data_ptr<T>();
    at::parallel_for(0, n, ce_grain(cols), [&](int64_t b, int64_t e) {
      const V zero(T(0));
      for (int64_t i = b; i < e; ++i) {
        const T* xr = xp + i * cols;
        T* dr = dp + i * cols;
        const int64_t y = yp[i];
        if (y == ignore_index || y < 0 || y >= cols) {
          for (int64_t c = 0; c < cols; c += vs) zero.store(dr + c, std::min(vs, cols - c));
          continue;
        }
        T f = T(gscale);
        if (gp != nullptr) f *= gp[i];
        if (wp != nullptr) f *= wp[i];
        if (cw != nullptr) f *= cw[y];
        if (lp != nullptr) {
          const V s(lp[i]), vf(f);
          for (int64_t c = 0; c < cols; c += vs) {
            const int64_t cnt = std::min(vs, cols - c);
            (fast_exp(load(xr + c, cnt) - s) * vf).store(dr + c, cnt);
          }
        } else {
          const V ninf(-std::numeric_limits<T>::infinity());
          V vmax = ninf;
          for (int64_t c = 0; c < cols; c += vs) {
            const int64_t cnt = std::min(vs, cols - c);
            vmax = at::vec::maximum(vmax, cnt == vs ? V::loadu(xr + c) : V::set(ninf, V::loadu(xr + c, cnt), cnt));
          }
          const V vm(max_lanes(vmax));
          V acc = zero;
          for (int64_t c = 0; c < cols; c += vs) {
            const int64_t cnt = std::min(vs, cols - c);
            const V ex = fast_exp(load(xr + c, cnt) - vm);
            acc = acc + (cnt == vs ? ex : V::set(zero, ex, cnt));
            ex.store(dr + c, cnt);
          }
          const V scale(f / add_lanes(acc));
          for (int64_t c = 0; c < cols; c += vs) {
            const int64_t cnt = std::min(vs, cols - c);
            (load(dr + c, cnt) * scale).store(dr + c, cnt);
          }
        }
        dr[y] -= f;
      }
    });
  });
  return dx;
}

void register_cross_entropy(pybind11::module_& m) {
  m.def("ce_forward", &ce_forward);
  m.def("ce_backward", &ce_backward);
}

}  // namespace

MMLOSS_REGISTER_OP(register_cross_entropy);
