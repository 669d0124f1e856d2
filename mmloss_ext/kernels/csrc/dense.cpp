// Fused CPU kernels of the "dense" losses: softmax cross-entropy and the binary Dice loss.
//
// Same contract as fused.cpp: the eager functionals in mmloss_ext/losses/ are the spec, these
// kernels compute the same formula and its hand-derived gradient in one pass over memory forward
// and one backward, vectorised with at::vec and parallelised with at::parallel_for.
//
//   * cross-entropy: logits (N, C) and int64 labels (N,); per row the max, the log-sum-exp and
//     lse - x[y], times class_weight[y] and an (N,) weight; rows whose label is ignore_index give 0.
//     Rows are short (C ~ 80) and stay in L1 between the passes over them. The backward
//     (softmax - onehot) * upstream * weight recomputes the row's max and sum of exponentials,
//     or takes the (N,) log-sum-exp saved by the forward (`lse`, see ce_forward).
//   * Dice (binary): pred (N, P) logits (sigmoid fused in) or probabilities, target (N, P); the
//     forward gives the per-sample sums I = sum p t, A = sum p^2 (or p), B = sum t^2 (or t) and the
//     loss; rows are long and N small, so every row is cut into fixed blocks, the blocks run in
//     parallel and their partial sums (double) are combined per row in a fixed order (the result
//     does not depend on the number of threads). The backward uses the (N, 3) sums saved by the
//     forward and is one pass.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "abi.h"
#include "vec_common.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

using at::vec::Vectorized;

using mmloss_ext::fast_exp;
using mmloss_ext::hsum;
using mmloss_ext::kDiceDenominatorMin;
using mmloss_ext::kOutElements;
using mmloss_ext::kOutTotal;
using mmloss_ext::load;

// horizontal max and sum in the vector unit (shuffles): a row of the cross-entropy is a few vectors
template <typename T>
inline T max_lanes(const Vectorized<T>& v) {
  return at::vec::vec_reduce_all<T>([](Vectorized<T>& a, Vectorized<T>& b) { return at::vec::maximum(a, b); }, v);
}

template <typename T>
inline T add_lanes(const Vectorized<T>& v) {
  return at::vec::vec_reduce_all<T>([](Vectorized<T>& a, Vectorized<T>& b) { return a + b; }, v);
}


template <typename T>
const T* opt_ptr(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

void check_dense(const at::Tensor& x, std::initializer_list<c10::optional<at::Tensor>> others) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous() && x.dim() == 2, "mmloss_ext fused: pred must be a contiguous 2-D CPU tensor");
  for (const auto& t : others) {
    if (t.has_value() && t->defined()) {
      TORCH_CHECK(t->device().is_cpu() && t->is_contiguous(), "mmloss_ext fused: inputs must be contiguous CPU tensors");
      TORCH_CHECK(t->scalar_type() == x.scalar_type() || t->scalar_type() == at::kLong || t->scalar_type() == at::kDouble,
                  "mmloss_ext fused: dtype mismatch");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// softmax cross-entropy

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

inline int64_t ce_grain(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)); }

// out_mode kOutTotal: the weighted total (float64 scalar); kOutElements: the weighted loss per row (N,).
// save_lse: also return the (N,) log-sum-exp (else an undefined tensor), for ce_backward.
// The third result says whether a label lies outside [0, C) and is not ignore_index (its row
// counts as ignored): the caller raises its own error (the labels are checked here, in the same
// pass, instead of by separate passes over them).
std::tuple<at::Tensor, at::Tensor, bool> ce_forward(at::Tensor x, at::Tensor labels, c10::optional<at::Tensor> class_weight,
                                              c10::optional<at::Tensor> w, int64_t ignore_index, int64_t out_mode,
                                              bool save_lse) {
  check_dense(x, {labels, class_weight, w});
  mmloss_ext::check_out_mode(out_mode, /*rows=*/false);
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
    const T* cw = opt_ptr<T>(class_weight);
    const T* wp = opt_ptr<T>(w);
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
  check_dense(x, {labels, class_weight, w, grow, lse});
  const int64_t n = x.size(0), cols = x.size(1);
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_ce_backward", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    constexpr int64_t vs = V::size();
    const T* xp = x.data_ptr<T>();
    const int64_t* yp = labels.data_ptr<int64_t>();
    const T* cw = opt_ptr<T>(class_weight);
    const T* wp = opt_ptr<T>(w);
    const T* gp = opt_ptr<T>(grow);
    const T* lp = opt_ptr<T>(lse);
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

// ---------------------------------------------------------------------------------------------
// binary Dice

constexpr int64_t kBlock = 8192;  // elements of a row per parallel task

struct DiceOpts {
  bool sigmoid, naive, has_ignore;
  double eps, ignore;
  explicit DiceOpts(const std::vector<double>& h)
      : sigmoid(h.at(0) != 0.0), naive(h.at(1) != 0.0), has_ignore(h.at(3) != 0.0), eps(h.at(2)), ignore(h.at(4)) {}
};

// p = sigmoid(x) with one exp, and p (1 - p): e = exp(-|x|), p = 1/(1+e) (x >= 0) or e/(1+e)
template <typename T>
inline void sigmoid_and_slope(const Vectorized<T>& x, Vectorized<T>& p, Vectorized<T>& pq) {
  using V = Vectorized<T>;
  const V one(T(1));
  const V e = fast_exp(x.abs().neg());
  const V r = one / (one + e), er = e * r;
  p = V::blendv(er, r, x >= V(T(0)));
  pq = er * r;
}

// per-row coefficients from the sums (I, A, B): the loss, d loss / d I and d loss / d A
struct DiceRow {
  double loss, d_inter, d_a;
  DiceRow(const double* s, const DiceOpts& o) {
    const double inter = s[0], a = s[1], b = s[2];
    const double num = o.naive ? 2.0 * inter + o.eps : 2.0 * inter;
    const double raw = o.naive ? a + b + o.eps : a + o.eps + b + o.eps;
    const double den = std::max(raw, kDiceDenominatorMin);
    loss = 1.0 - num / den;
    d_inter = -2.0 / den;
    d_a = raw >= kDiceDenominatorMin ? num / (den * den) : 0.0;  // clamp_min passes the gradient where raw >= floor
  }
};

template <typename T, bool sig, bool naive, bool ign>
void dice_sums(const T* x, const T* t, int64_t rows, int64_t cols, double ignore, double* sums) {
  using V = Vectorized<T>;
  constexpr int64_t vs = V::size();
  const int64_t per_row = (cols + kBlock - 1) / kBlock, blocks = rows * per_row;
  std::vector<double> part(3 * std::max<int64_t>(blocks, 1), 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t bb, int64_t be) {
    const V zero(T(0)), vign(static_cast<T>(ignore));
    for (int64_t blk = bb; blk < be; ++blk) {
      const int64_t r = blk / per_row, c0 = (blk % per_row) * kBlock, c1 = std::min(cols, c0 + kBlock);
      const T* xr = x + r * cols;
      const T* tr = t + r * cols;
      double s[3] = {0.0, 0.0, 0.0};
      V ai = zero, aa = zero, ab = zero;
      int64_t pending = 0;
      for (int64_t c = c0; c < c1; c += vs) {
        const int64_t cnt = std::min(vs, c1 - c);
        const V xv = load(xr + c, cnt);
        V tv = load(tr + c, cnt), p, pq;
        if constexpr (sig) {
          sigmoid_and_slope(xv, p, pq);
        } else {
          p = xv;
        }
        if (cnt != vs) p = V::set(zero, p, cnt);  // tail lanes: x and t load as 0, but sigmoid(0) = 1/2
        if constexpr (ign) {
          const V keep = tv != vign;  // all-ones lanes where the target is not ignored
          p = p & keep;
          tv = tv & keep;
        }
        ai = at::vec::fmadd(p, tv, ai);
        if constexpr (naive) {
          aa = aa + p;
          ab = ab + tv;
        } else {
          aa = at::vec::fmadd(p, p, aa);
          ab = at::vec::fmadd(tv, tv, ab);
        }
        if (++pending == 64) {  // float32 sums stay short: flush to double every 64 vectors
          s[0] += hsum(ai), s[1] += hsum(aa), s[2] += hsum(ab);
          ai = aa = ab = zero;
          pending = 0;
        }
      }
      double* out = part.data() + 3 * blk;
      out[0] = s[0] + hsum(ai), out[1] = s[1] + hsum(aa), out[2] = s[2] + hsum(ab);
    }
  });
  for (int64_t r = 0; r < rows; ++r) {  // combined in block order: independent of the thread count
    double s[3] = {0.0, 0.0, 0.0};
    for (int64_t k = 0; k < per_row; ++k)
      for (int j = 0; j < 3; ++j) s[j] += part[3 * (r * per_row + k) + j];
    for (int j = 0; j < 3; ++j) sums[3 * r + j] = s[j];
  }
}

template <typename T, bool sig, bool naive, bool ign>
void dice_grad(const T* x, const T* t, int64_t rows, int64_t cols, double ignore, const double* coef, T* dx) {
  using V = Vectorized<T>;
  constexpr int64_t vs = V::size();
  const int64_t per_row = (cols + kBlock - 1) / kBlock, blocks = rows * per_row;
  at::parallel_for(0, blocks, 1, [&](int64_t bb, int64_t be) {
    const V vign(static_cast<T>(ignore)), two(T(2));
    for (int64_t blk = bb; blk < be; ++blk) {
      const int64_t r = blk / per_row, c0 = (blk % per_row) * kBlock, c1 = std::min(cols, c0 + kBlock);
      const V ci(static_cast<T>(coef[2 * r])), ca(static_cast<T>(coef[2 * r + 1]));
      const T* xr = x + r * cols;
      const T* tr = t + r * cols;
      T* dr = dx + r * cols;
      for (int64_t c = c0; c < c1; c += vs) {
        const int64_t cnt = std::min(vs, c1 - c);
        const V xv = load(xr + c, cnt), tv = load(tr + c, cnt);
        V p, pq, g;
        if constexpr (sig) {
          sigmoid_and_slope(xv, p, pq);
        } else {
          p = xv;
        }
        // d loss / d p = dL/dI t + dL/dA dA/dp, dA/dp = 1 (naive) or 2 p
        if constexpr (naive) {
          g = at::vec::fmadd(ci, tv, ca);
        } else {
          g = at::vec::fmadd(ci, tv, ca * two * p);
        }
        if constexpr (sig) g = g * pq;
        if constexpr (ign) g = g & (tv != vign);
        g.store(dr + c, cnt);
      }
    }
  });
}

template <typename F>
void with_dice_flags(const DiceOpts& o, F&& f) {  // the three flags as compile-time constants
  auto pick_ign = [&](auto sig, auto naive) {
    if (o.has_ignore) f(sig, naive, std::true_type());
    else f(sig, naive, std::false_type());
  };
  auto pick_naive = [&](auto sig) {
    if (o.naive) pick_ign(sig, std::true_type());
    else pick_ign(sig, std::false_type());
  };
  if (o.sigmoid) pick_naive(std::true_type());
  else pick_naive(std::false_type());
}

// h = (sigmoid, naive, eps, has_ignore, ignore); w: (N,) weight or undefined.
// out_mode kOutTotal: the weighted total (float64 scalar); kOutElements: the weighted loss per row (N,).
// Returns (out, sums): sums (N, 3) float64 = (I, A, B), for dice_backward.
std::tuple<at::Tensor, at::Tensor> dice_forward(std::vector<double> h, at::Tensor x, at::Tensor t,
                                                c10::optional<at::Tensor> w, int64_t out_mode) {
  check_dense(x, {t, w});
  mmloss_ext::check_out_mode(out_mode, /*rows=*/false);
  TORCH_CHECK(t.sizes() == x.sizes() && t.scalar_type() == x.scalar_type(), "mmloss_ext fused: bad Dice target");
  const DiceOpts o(h);
  const int64_t n = x.size(0), cols = x.size(1);
  at::Tensor sums = at::empty({n, 3}, x.options().dtype(at::kDouble));
  at::Tensor out =
      out_mode == kOutElements ? at::empty({n}, x.options()) : at::empty({}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_dice_forward", [&] {
    using T = scalar_t;
    double* s = sums.data_ptr<double>();
    with_dice_flags(o, [&](auto sig, auto naive, auto ign) {
      dice_sums<T, decltype(sig)::value, decltype(naive)::value, decltype(ign)::value>(
          x.data_ptr<T>(), t.data_ptr<T>(), n, cols, o.ignore, s);
    });
    const T* wp = opt_ptr<T>(w);
    double total = 0.0;
    for (int64_t r = 0; r < n; ++r) {
      const double l = DiceRow(s + 3 * r, o).loss * (wp != nullptr ? double(wp[r]) : 1.0);
      if (out_mode == kOutElements) out.data_ptr<T>()[r] = T(l);
      total += l;
    }
    if (out_mode == kOutTotal) out.fill_(total);
  });
  return {out, sums};
}

// dx = gscale * grow[r] * w[r] * d loss_r / d x, from the forward's (N, 3) sums
at::Tensor dice_backward(std::vector<double> h, at::Tensor x, at::Tensor t, at::Tensor sums,
                         c10::optional<at::Tensor> w, double gscale, c10::optional<at::Tensor> grow) {
  check_dense(x, {t, w, grow});
  TORCH_CHECK(sums.scalar_type() == at::kDouble && sums.is_contiguous() && sums.numel() == 3 * x.size(0),
              "mmloss_ext fused: bad Dice sums");
  const DiceOpts o(h);
  const int64_t n = x.size(0), cols = x.size(1);
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_dice_backward", [&] {
    using T = scalar_t;
    const T* wp = opt_ptr<T>(w);
    const T* gp = opt_ptr<T>(grow);
    const double* s = sums.data_ptr<double>();
    std::vector<double> coef(2 * std::max<int64_t>(n, 1));
    for (int64_t r = 0; r < n; ++r) {
      const DiceRow row(s + 3 * r, o);
      double f = gscale;
      if (wp != nullptr) f *= double(wp[r]);
      if (gp != nullptr) f *= double(gp[r]);
      coef[2 * r] = f * row.d_inter;
      coef[2 * r + 1] = f * row.d_a;
    }
    with_dice_flags(o, [&](auto sig, auto naive, auto ign) {
      dice_grad<T, decltype(sig)::value, decltype(naive)::value, decltype(ign)::value>(
          x.data_ptr<T>(), t.data_ptr<T>(), n, cols, o.ignore, coef.data(), dx.data_ptr<T>());
    });
  });
  return dx;
}

}  // namespace

void register_dense(pybind11::module_& m) {
  m.def("ce_forward", &ce_forward);
  m.def("ce_backward", &ce_backward);
  m.def("dice_forward", &dice_forward);
  m.def("dice_backward", &dice_backward);
}
