// Fused CPU kernel of the binary Dice loss: pred (N, P) logits (sigmoid fused in) or
// probabilities, target (N, P); the forward gives the per-sample sums I = sum p t, A = sum p^2 (or
// p), B = sum t^2 (or t) and the loss; rows are long and N small, so every row is cut into fixed
// blocks, the blocks run in parallel and their partial sums (double) are combined per row in a fixed
// order (the result does not depend on the number of threads). The backward uses the (N, 3) sums
// saved by the forward and is one pass.
//
// The eager functional in mmloss_ext/losses/ is the spec; this computes the same formula and its
// hand-derived gradient, vectorised with at::vec and parallelised with at::parallel_for.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "../cpp/abi.h"
#include "../cpp/common.h"
#include "../cpp/registry.h"
#include "../cpp/vec_common.h"

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

using namespace mmloss_ext;  // the out modes, hyper-parameter layout and constants of abi.h, the shared helpers
using at::vec::Vectorized;

void check_dice(const at::Tensor& x, std::initializer_list<c10::optional<at::Tensor>> others) {
  check_inputs("mmloss_ext fused Dice", x, 2, /*exact=*/true, others, kPredDtypeOnly);
}

constexpr int64_t kBlock = 8192;  // elements of a row per parallel task

// h: the layout of abi.h's DiceHp (core/abi.py's DICE_HP)
struct DiceOpts {
  bool sigmoid, naive, has_ignore;
  double eps, ignore;
  explicit DiceOpts(const std::vector<double>& h) {
    check_hp_size("mmloss_ext fused Dice", h, kDiceHpSize);
    sigmoid = h[kDiceHpSigmoid] != 0.0;
    naive = h[kDiceHpNaive] != 0.0;
    eps = h[kDiceHpEps];
    has_ignore = h[kDiceHpHasIgnore] != 0.0;
    ignore = h[kDiceHpIgnoreIndex];
  }
};

// p = sigmoid(x) with one exp, and p (1 - p): e = exp(-|x|), p = 1/(1+e) (x >= 0) or e/(1+e)
template <typename T>
inline void sigmoid_and_slope(const Vectorized<T>& x, Vectorized<T>& p, Vectorized<T>& pq) {
  using V = Vectorized<T>;
  const V one(T(1));
  const V e = fast_exp(x.abs().neg());
  sigmoid_from_exp(x, e, one / (one + e), p, pq);
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

// h: DiceHp (sigmoid, naive, eps, has_ignore, ignore_index); w: (N,) weight or undefined.
// out_mode kOutTotal: the weighted total (float64 scalar); kOutElements: the weighted loss per row (N,).
// Returns (out, sums): sums (N, 3) float64 = (I, A, B), for dice_backward.
std::tuple<at::Tensor, at::Tensor> dice_forward(std::vector<double> h, at::Tensor x, at::Tensor t,
                                                c10::optional<at::Tensor> w, int64_t out_mode) {
  check_dice(x, {t, w});
  check_out_mode(out_mode, /*rows=*/false);
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
    const T* wp = ptr_or_null<T>(w);
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
  check_dice(x, {t, w, grow});
  TORCH_CHECK(sums.scalar_type() == at::kDouble && sums.is_contiguous() && sums.numel() == 3 * x.size(0),
              "mmloss_ext fused: bad Dice sums");
  const DiceOpts o(h);
  const int64_t n = x.size(0), cols = x.size(1);
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_dice_backward", [&] {
    using T = scalar_t;
    const T* wp = ptr_or_null<T>(w);
    const T* gp = ptr_or_null<T>(grow);
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

void register_dice(pybind11::module_& m) {
  m.def("dice_forward", &dice_forward);
  m.def("dice_backward", &dice_backward);
}

}  // namespace

MMLOSS_REGISTER_OP(register_dice);
