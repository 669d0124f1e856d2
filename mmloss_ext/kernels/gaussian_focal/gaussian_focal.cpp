// Fused CPU kernel of the Gaussian focal loss (CornerNet / CenterNet heatmaps): one pass forward,
// one pass backward, saving only the inputs. Python names: heatmap_forward, heatmap_backward.
//
// The readable reference is mmloss_ext/losses/classification/heatmap.py (gaussian_focal_loss);
// this computes the same formula and its analytic gradient, elementwise over p = pred (a
// probability) and t = target:
//
//   loss = neg_weight (1 - t)^gamma p^alpha (-log(1 - p + eps))
//        + pos_weight [t == 1] (1 - p)^alpha (-log(p + eps))
//
// with eps = kGaussianFocalEps (core/abi.py's GAUSSIAN_FOCAL_EPS, as the eager loss).
// Inputs are seen flat; a per-row weight covers numel / rows consecutive elements. The positive
// term is evaluated only in the vectors that hold a target of exactly 1 (a heatmap has a few);
// where it is skipped and p + eps <= 0 (outside a probability's range) the loss is NaN, as the
// eager `-log(p + eps) * [t == 1]` makes it. pos_weight == 0 switches the positive term off (the
// form with listed positives, whose dense part has only negatives).
//
// Totals are deterministic: the flat input is cut into fixed blocks of kBlock elements, each
// block's sum (float32 vectors flushed to double every 64 vectors) goes to its own slot, and the
// slots are added in order -- the same total for any number of threads.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include "../cpp/abi.h"
#include "../cpp/common.h"
#include "../cpp/registry.h"
#include "../cpp/vec_common.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using namespace mmloss_ext;  // the out modes, hyper-parameter layout and constants of abi.h, the shared helpers
using at::vec::Vectorized;

constexpr int64_t kBlock = 8192;  // elements per block: a multiple of every vector width

// q^g and its slope g q^(g - 1), as the eager path's _pow: 0^0 = 1, and the slope at q = 0 is 0
// (1 for g = 1). Whole g up to 8 by multiplications, any other g by SLEEF's pow.
template <typename T>
struct Power {
  using V = Vectorized<T>;
  T g;
  int k;  // g when it is a whole number in [0, 8], else -1
  explicit Power(double g_) : g(T(g_)), k(g_ >= 0.0 && g_ <= 8.0 && g_ == std::floor(g_) ? int(g_) : -1) {}
  static V whole(const V& q, int n) {
    switch (n) {
      case 0: return V(T(1));
      case 1: return q;
      case 2: return q * q;
      default: {
        const V h = whole(q, n / 2);
        return n % 2 ? h * h * q : h * h;
      }
    }
  }
  V value(const V& q) const { return k >= 0 ? whole(q, k) : q.pow(V(g)); }
  V slope(const V& q) const {
    if (k == 0) return V(T(0));
    if (k == 1) return V(T(1));
    if (k > 1) return V(g) * whole(q, k - 1);
    return V::blendv(V(g) * q.pow(V(g - T(1))), V(T(0)), q == V(T(0)));
  }
};

// hp: the layout of abi.h's GaussianFocalHp (core/abi.py's GAUSSIAN_FOCAL_HP), its size checked
template <typename T>
struct HeatmapOp {
  using V = Vectorized<T>;
  Power<T> alpha, gamma;
  T pos_weight, neg_weight, eps;
  bool positives;
  explicit HeatmapOp(const std::vector<double>& h)
      : alpha(h[kGaussianFocalHpAlpha]), gamma(h[kGaussianFocalHpGamma]), pos_weight(T(h[kGaussianFocalHpPosWeight])),
        neg_weight(T(h[kGaussianFocalHpNegWeight])), eps(T(kGaussianFocalEps)),
        positives(h[kGaussianFocalHpPosWeight] != 0.0) {}

  // the lanes of `t` equal to 1 (a mask), and whether there is any
  static bool any_positive(const V& t, V& mask) {
    mask = t == V(T(1));
    return mask.zero_mask() != (1 << V::size()) - 1;
  }
  // NaN where the skipped positive term's log is undefined (p + eps <= 0, or NaN: propagated anyway)
  V undefined_log(const V& p, const V& not_pos, const V& v) const {
    return V::blendv(v, V(std::numeric_limits<T>::quiet_NaN()), ((p + V(eps)) <= V(T(0))) & not_pos);
  }

  V loss(const V& p, const V& t) const {
    const V one(T(1));
    const V q = one - p;
    V l = V(neg_weight) * gamma.value(one - t) * alpha.value(p) * (V(T(0)) - (q + V(eps)).log());
    if (!positives) return l;
    V mask;
    if (any_positive(t, mask)) {
      const V pos = V(pos_weight) * alpha.value(q) * (V(T(0)) - (p + V(eps)).log());
      l = l + (pos & mask);
    }
    return undefined_log(p, V(T(0)) == (mask & one), l);
  }

  V grad(const V& p, const V& t) const {
    const V one(T(1)), zero(T(0));
    const V q = one - p, qe = q + V(eps);
    // d/dp [-log(1 - p + eps) p^alpha] = p^alpha / (1 - p + eps) - log(1 - p + eps) alpha p^(alpha - 1)
    V g = V(neg_weight) * gamma.value(one - t) * (alpha.value(p) / qe - qe.log() * alpha.slope(p));
    if (!positives) return g;
    V mask;
    if (any_positive(t, mask)) {
      // d/dp [-log(p + eps) (1 - p)^alpha] = -(1 - p)^alpha / (p + eps) + log(p + eps) alpha (1 - p)^(alpha - 1)
      const V pe = p + V(eps);
      const V pos = V(pos_weight) * (pe.log() * alpha.slope(q) - alpha.value(q) / pe);
      g = g + (pos & mask);
    }
    return undefined_log(p, zero == (mask & one), g);
  }
};

template <typename T>
struct Flat {  // the inputs of one call, flat
  int64_t numel = 0, cols = 1;
  const T* x = nullptr;
  const T* t = nullptr;
  const T* wrow = nullptr;   // one weight per `cols` consecutive elements
  const T* wfull = nullptr;  // one per element
};

template <typename T>
Flat<T> make_flat(const at::Tensor& x, const at::Tensor& t, const c10::optional<at::Tensor>& wrow,
                  const c10::optional<at::Tensor>& wfull) {
  Flat<T> a;
  a.numel = x.numel();
  const int64_t rows = x.dim() > 0 ? x.size(0) : 1;
  a.cols = rows > 0 ? std::max<int64_t>(a.numel / rows, 1) : 1;
  a.x = x.data_ptr<T>();
  a.t = t.data_ptr<T>();
  a.wrow = ptr_or_null<T>(wrow);
  a.wfull = ptr_or_null<T>(wfull);
  if (a.wrow != nullptr && a.cols == 1) {  // one element per row: the row weight is elementwise
    a.wfull = a.wrow;
    a.wrow = nullptr;
  }
  return a;
}

// f(begin, end, row_weight) over the segments of [begin, end) that lie in one row
template <typename T, typename F>
inline void for_segments(const Flat<T>& a, int64_t begin, int64_t end, F&& f) {
  if (a.wrow == nullptr) {
    f(begin, end, T(1));
    return;
  }
  for (int64_t s = begin; s < end;) {
    const int64_t row = s / a.cols, e = std::min(end, (row + 1) * a.cols);
    f(s, e, a.wrow[row]);
    s = e;
  }
}

constexpr const char* kWho = "mmloss_ext fused Gaussian focal";

void check(const at::Tensor& x, std::initializer_list<c10::optional<at::Tensor>> others) {
  check_inputs(kWho, x, 0, /*exact=*/false, others, kPredDtypeOnly);
}

// out_mode kOutTotal: the weighted total (float64 0-d); kOutElements: the weighted loss (pred's shape)
at::Tensor heatmap_forward(std::vector<double> hp, at::Tensor x, at::Tensor target, c10::optional<at::Tensor> wrow,
                           c10::optional<at::Tensor> wfull, int64_t out_mode) {
  check_hp_size(kWho, hp, kGaussianFocalHpSize);
  check(x, {target, wrow, wfull});
  check_out_mode(out_mode, /*rows=*/false);
  TORCH_CHECK(target.numel() == x.numel(), kWho, ": pred and target differ in size");
  at::Tensor out = out_mode == kOutElements ? at::empty_like(x) : at::empty({}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_heatmap_forward", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    constexpr int64_t vs = V::size();
    const HeatmapOp<T> op(hp);
    const Flat<T> a = make_flat<T>(x, target, wrow, wfull);
    T* o = out_mode == kOutElements ? out.data_ptr<T>() : nullptr;
    const int64_t blocks = (a.numel + kBlock - 1) / kBlock;
    std::vector<double> partial(o == nullptr ? blocks : 0, 0.0);
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        double sum = 0.0;
        V acc(T(0));
        int64_t pending = 0;
        for_segments(a, b * kBlock, std::min(a.numel, (b + 1) * kBlock), [&](int64_t s, int64_t e, T rw) {
          for (int64_t i = s; i < e; i += vs) {
            const int64_t cnt = std::min(vs, e - i);
            prefetch_read(a.x + i);
            prefetch_read(a.t + i);
            V l = op.loss(load(a.x + i, cnt), load(a.t + i, cnt));
            if (a.wfull != nullptr) {
              prefetch_read(a.wfull + i);
              l = l * load(a.wfull + i, cnt);
            }
            if (a.wrow != nullptr) l = l * V(rw);
            if (o != nullptr) {
              l.store(o + i, cnt);
              continue;
            }
            acc = acc + (cnt == vs ? l : V::set(V(T(0)), l, cnt));
            if (++pending == 64) {
              sum += hsum(acc);
              acc = V(T(0));
              pending = 0;
            }
          }
        });
        if (o == nullptr) partial[b] = sum + hsum(acc);
      }
    });
    if (o == nullptr) {
      double total = 0.0;
      for (double s : partial) total += s;
      out.fill_(total);
    }
  });
  return out;
}

// d x = gscale * gfull * weight * d loss / d x
at::Tensor heatmap_backward(std::vector<double> hp, at::Tensor x, at::Tensor target, c10::optional<at::Tensor> wrow,
                            c10::optional<at::Tensor> wfull, double gscale, c10::optional<at::Tensor> gfull) {
  check_hp_size(kWho, hp, kGaussianFocalHpSize);
  check(x, {target, wrow, wfull, gfull});
  TORCH_CHECK(target.numel() == x.numel(), kWho, ": pred and target differ in size");
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_heatmap_backward", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    constexpr int64_t vs = V::size();
    const HeatmapOp<T> op(hp);
    const Flat<T> a = make_flat<T>(x, target, wrow, wfull);
    const T* gp = ptr_or_null<T>(gfull);
    T* d = dx.data_ptr<T>();
    const int64_t blocks = (a.numel + kBlock - 1) / kBlock;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for_segments(a, b * kBlock, std::min(a.numel, (b + 1) * kBlock), [&](int64_t s, int64_t e, T rw) {
          const V f(T(gscale) * rw);
          for (int64_t i = s; i < e; i += vs) {
            const int64_t cnt = std::min(vs, e - i);
            prefetch_read(a.x + i);
            prefetch_read(a.t + i);
            V g = op.grad(load(a.x + i, cnt), load(a.t + i, cnt)) * f;
            if (a.wfull != nullptr) {
              prefetch_read(a.wfull + i);
              g = g * load(a.wfull + i, cnt);
            }
            if (gp != nullptr) {
              prefetch_read(gp + i);
              g = g * load(gp + i, cnt);
            }
            g.store(d + i, cnt);
          }
        });
      }
    });
  });
  return dx;
}

void register_gaussian_focal(pybind11::module_& m) {
  m.def("heatmap_forward", &heatmap_forward);
  m.def("heatmap_backward", &heatmap_backward);
}

}  // namespace

MMLOSS_REGISTER_OP(register_gaussian_focal);
