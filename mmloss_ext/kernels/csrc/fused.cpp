// Fused CPU kernels of mmloss_ext's hot losses: one pass over memory forward, one backward.
//
// The readable reference is the eager functional in mmloss_ext/losses/; these kernels compute the
// same formula and its analytic gradient, vectorised with ATen's at::vec (SLEEF exp/log1p/pow)
// and parallelised with at::parallel_for (torch's intra-op threads, OMP_NUM_THREADS).
//
// Two drivers:
//   * elementwise (focal, quality focal, varifocal, smooth L1 / L1, balanced L1): pred (N, K)
//     against a dense target (N, K) or integer labels (N,) (one-hot, label K = background, with an
//     optional per-row score: QFL), weighted by an optional per-row (N,) or full (N, K) weight;
//     the forward writes the (N, K) loss, the (N,) row sums, or returns the total (never both);
//   * boxes (IoU family): pred and target (N, 4) x1y1x2y2, one loss per box, scalar code.
// The backward gets the upstream gradient as a scalar (reduced losses), per row or per element.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using at::vec::Vectorized;

// ---------------------------------------------------------------------------------------------
// elementwise ops: loss(x, t) and d loss / d x, on vectors

template <typename T>
struct SigmoidParts {  // p = sigmoid(x), bce(x, t) = max(x, 0) - x t + log1p(exp(-|x|))
  using V = Vectorized<T>;
  V p, softplus;
  explicit SigmoidParts(const V& x) {
    const V one(T(1));
    V e = x.abs().neg().exp_u20();  // 20 ulp in float32 (inductor's softmax exp), exact exp in float64
    V r = one / (one + e);
    p = V::blendv(e * r, r, x >= V(T(0)));
    softplus = e.log1p();
  }
  V bce(const V& x, const V& t) const { return at::vec::maximum(x, V(T(0))) - x * t + softplus; }
};

// pow(q, g) and its derivative g q^(g-1) (0 where q == 0), exact for g in {0, 1, 2}
template <typename V, typename T>
inline void pow_and_slope(const V& q, T g, V& qg, V& slope) {
  if (g == T(2)) {
    qg = q * q;
    slope = V(T(2)) * q;
  } else if (g == T(1)) {
    qg = q;
    slope = V(T(1));
  } else if (g == T(0)) {
    qg = V(T(1));
    slope = V(T(0));
  } else {
    const V zero(T(0));
    qg = q.pow(V(g));
    slope = V::blendv(zero, V(g) * q.pow(V(g - T(1))), q > zero);
  }
}

template <typename T>
struct FocalOp {  // sigmoid focal: bce (alpha t + (1-alpha)(1-t)) (p(1-t) + (1-p)t)^gamma
  using V = Vectorized<T>;
  T alpha, gamma;
  explicit FocalOp(const std::vector<double>& h) : alpha(T(h.at(0))), gamma(T(h.at(1))) {}
  V loss(const V& x, const V& t) const {
    SigmoidParts<T> s(x);
    V af = V(T(1) - alpha) + V(T(2) * alpha - T(1)) * t;
    V q = s.p + t * (V(T(1)) - V(T(2)) * s.p), qg, slope;
    pow_and_slope(q, gamma, qg, slope);
    return s.bce(x, t) * af * qg;
  }
  V grad(const V& x, const V& t) const {
    SigmoidParts<T> s(x);
    const V one(T(1)), two(T(2));
    V af = V(T(1) - alpha) + V(T(2) * alpha - T(1)) * t;
    V q = s.p + t * (one - two * s.p), qg, slope;
    pow_and_slope(q, gamma, qg, slope);
    return af * ((s.p - t) * qg + s.bce(x, t) * slope * (one - two * t) * s.p * (one - s.p));
  }
};

template <typename T>
struct QualityFocalOp {  // bce |t - p|^beta
  using V = Vectorized<T>;
  T beta;
  explicit QualityFocalOp(const std::vector<double>& h) : beta(T(h.at(0))) {}
  V loss(const V& x, const V& t) const {
    SigmoidParts<T> s(x);
    V qg, slope;
    pow_and_slope((s.p - t).abs(), beta, qg, slope);
    return s.bce(x, t) * qg;
  }
  V grad(const V& x, const V& t) const {
    SigmoidParts<T> s(x);
    V d = s.p - t, qg, slope;
    pow_and_slope(d.abs(), beta, qg, slope);
    const V zero(T(0)), one(T(1));
    V sign = V::blendv(zero, one, d > zero) - V::blendv(zero, one, d < zero);
    return d * qg + s.bce(x, t) * slope * sign * s.p * (one - s.p);
  }
};

template <typename T>
struct VarifocalOp {  // bce * (t > 0 ? (iou_weighted ? t : 1) : alpha |p - t|^gamma)
  using V = Vectorized<T>;
  T alpha, gamma;
  bool iou_weighted;
  explicit VarifocalOp(const std::vector<double>& h)
      : alpha(T(h.at(0))), gamma(T(h.at(1))), iou_weighted(h.at(2) != 0.0) {}
  V positive(const V& t) const { return iou_weighted ? t : V(T(1)); }
  V loss(const V& x, const V& t) const {
    SigmoidParts<T> s(x);
    V qg, slope;
    pow_and_slope((s.p - t).abs(), gamma, qg, slope);
    return s.bce(x, t) * V::blendv(V(alpha) * qg, positive(t), t > V(T(0)));
  }
  V grad(const V& x, const V& t) const {
    SigmoidParts<T> s(x);
    const V zero(T(0)), one(T(1));
    V d = s.p - t, qg, slope;
    pow_and_slope(d.abs(), gamma, qg, slope);
    V sign = V::blendv(zero, one, d > zero) - V::blendv(zero, one, d < zero);
    V negative = V(alpha) * (d * qg + s.bce(x, t) * slope * sign * s.p * (one - s.p));
    return V::blendv(negative, d * positive(t), t > zero);
  }
};

template <typename V, typename T>
inline V sign_of(const V& d) {
  const V zero(T(0)), one(T(1));
  return V::blendv(zero, one, d > zero) - V::blendv(zero, one, d < zero);
}

template <typename T>
struct SmoothL1Op {  // |d| < beta ? 0.5 d^2 / beta : |d| - 0.5 beta; beta < 1e-5 is L1
  using V = Vectorized<T>;
  T beta;
  bool l1;
  explicit SmoothL1Op(const std::vector<double>& h) : beta(T(h.at(0))), l1(h.at(0) < 1e-5) {}
  V loss(const V& x, const V& t) const {
    V ad = (x - t).abs();
    if (l1) return ad;
    return V::blendv(ad - V(T(0.5) * beta), V(T(0.5)) * ad * ad / V(beta), ad < V(beta));
  }
  V grad(const V& x, const V& t) const {
    V d = x - t, s = sign_of<V, T>(d);
    if (l1) return s;
    return V::blendv(s, d / V(beta), d.abs() < V(beta));
  }
};

template <typename T>
struct BalancedL1Op {  // Libra R-CNN, b = exp(gamma / alpha) - 1
  using V = Vectorized<T>;
  T alpha, gamma, beta, b;
  explicit BalancedL1Op(const std::vector<double>& h)
      : alpha(T(h.at(0))), gamma(T(h.at(1))), beta(T(h.at(2))), b(T(std::exp(h.at(1) / h.at(0)) - 1.0)) {}
  V loss(const V& x, const V& t) const {
    V ad = (x - t).abs();
    V inner = V(alpha / b) * (V(b) * ad + V(T(1))) * (V(b) * ad / V(beta)).log1p() - V(alpha) * ad;
    V outer = V(gamma) * ad + V(gamma / b - alpha * beta);
    return V::blendv(outer, inner, ad < V(beta));
  }
  V grad(const V& x, const V& t) const {
    V d = x - t, ad = d.abs();
    V inner = V(alpha) * ((V(b) * ad / V(beta)).log1p() + (V(b) * ad + V(T(1))) / (V(beta) + V(b) * ad)) - V(alpha);
    return sign_of<V, T>(d) * V::blendv(V(gamma), inner, ad < V(beta));
  }
};

enum ElementwiseKind { kFocal = 0, kQualityFocal = 1, kVarifocal = 2, kSmoothL1 = 3, kBalancedL1 = 4 };

template <typename T>
struct Rows {  // raw views of the inputs of one elementwise call
  int64_t rows = 0, cols = 0;
  const T* x = nullptr;
  const T* target = nullptr;        // dense (N, K) target, or
  const int64_t* labels = nullptr;  // (N,) labels: one-hot, times `score` when given
  const T* score = nullptr;
  const T* wrow = nullptr;   // (N,) weight
  const T* wfull = nullptr;  // (N, K) weight

  Vectorized<T> target_at(int64_t n, int64_t c) const {
    using V = Vectorized<T>;
    const int64_t vs = V::size();
    if (target != nullptr) {
      const int64_t cnt = std::min(vs, cols - c);
      return cnt == vs ? V::loadu(target + n * cols + c) : V::loadu(target + n * cols + c, cnt);
    }
    const T hot = score != nullptr ? score[n] : T(1);
    return V::blendv(V(T(0)), V(hot), V::arange(T(c), 1) == V(T(labels[n])));
  }
};

template <typename T>
inline Vectorized<T> load(const T* p, int64_t cnt) {
  return cnt == Vectorized<T>::size() ? Vectorized<T>::loadu(p) : Vectorized<T>::loadu(p, cnt);
}

template <typename T>
inline double hsum(const Vectorized<T>& v) {
  T buf[Vectorized<T>::size()];
  v.store(buf);
  double s = 0.0;
  for (int64_t i = 0; i < Vectorized<T>::size(); ++i) s += double(buf[i]);
  return s;
}

inline int64_t grain_rows(int64_t cols) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1)); }

// out_elem (N, K) or out_row (N,) when given; else the weighted total is returned.
template <typename T, typename Op>
double forward_rows(const Op& op, const Rows<T>& a, T* out_elem, T* out_row) {
  using V = Vectorized<T>;
  const int64_t vs = V::size();
  return at::parallel_reduce(0, a.rows, grain_rows(a.cols), 0.0, [&](int64_t begin, int64_t end, double total) {
    for (int64_t n = begin; n < end; ++n) {
      const T rw = a.wrow != nullptr ? a.wrow[n] : T(1);
      double row = 0.0;
      V acc(T(0));
      int64_t pending = 0;
      for (int64_t c = 0; c < a.cols; c += vs) {
        const int64_t cnt = std::min(vs, a.cols - c), off = n * a.cols + c;
        V l = op.loss(load(a.x + off, cnt), a.target_at(n, c));
        if (a.wfull != nullptr) l = l * load(a.wfull + off, cnt);
        if (out_elem != nullptr) {
          (l * V(rw)).store(out_elem + off, cnt);
          continue;
        }
        acc = acc + (cnt == vs ? l : V::set(V(T(0)), l, cnt));
        if (++pending == 64) {  // flush to double now and then: long rows stay accurate in float32
          row += hsum(acc);
          acc = V(T(0));
          pending = 0;
        }
      }
      if (out_elem != nullptr) continue;
      row = (row + hsum(acc)) * double(rw);
      if (out_row != nullptr)
        out_row[n] = T(row);
      else
        total += row;
    }
    return total;
  }, std::plus<double>());
}

// grad = gscale * grow[n] * gfull[n, k] * weight * d loss / d x
template <typename T, typename Op>
void backward_rows(const Op& op, const Rows<T>& a, double gscale, const T* grow, const T* gfull, T* dx) {
  using V = Vectorized<T>;
  const int64_t vs = V::size();
  at::parallel_for(0, a.rows, grain_rows(a.cols), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      T f = T(gscale);
      if (a.wrow != nullptr) f *= a.wrow[n];
      if (grow != nullptr) f *= grow[n];
      for (int64_t c = 0; c < a.cols; c += vs) {
        const int64_t cnt = std::min(vs, a.cols - c), off = n * a.cols + c;
        V g = op.grad(load(a.x + off, cnt), a.target_at(n, c)) * V(f);
        if (a.wfull != nullptr) g = g * load(a.wfull + off, cnt);
        if (gfull != nullptr) g = g * load(gfull + off, cnt);
        g.store(dx + off, cnt);
      }
    }
  });
}

template <typename T>
const T* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

template <typename T>
Rows<T> make_rows(const at::Tensor& x, const c10::optional<at::Tensor>& target,
                  const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& score,
                  const c10::optional<at::Tensor>& wrow, const c10::optional<at::Tensor>& wfull) {
  Rows<T> a;
  a.rows = x.size(0);
  a.cols = a.rows > 0 ? x.numel() / a.rows : 0;
  a.x = x.data_ptr<T>();
  a.target = ptr_or_null<T>(target);
  a.labels = labels.has_value() && labels->defined() ? labels->data_ptr<int64_t>() : nullptr;
  a.score = ptr_or_null<T>(score);
  a.wrow = ptr_or_null<T>(wrow);
  a.wfull = ptr_or_null<T>(wfull);
  return a;
}

template <typename T, typename F>
void with_op(int64_t kind, const std::vector<double>& h, F&& f) {
  switch (kind) {
    case kFocal: f(FocalOp<T>(h)); break;
    case kQualityFocal: f(QualityFocalOp<T>(h)); break;
    case kVarifocal: f(VarifocalOp<T>(h)); break;
    case kSmoothL1: f(SmoothL1Op<T>(h)); break;
    case kBalancedL1: f(BalancedL1Op<T>(h)); break;
    default: TORCH_CHECK(false, "mmloss_ext fused: unknown elementwise kind ", kind);
  }
}

void check_inputs(const at::Tensor& x, std::initializer_list<c10::optional<at::Tensor>> others) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous() && x.dim() >= 1, "mmloss_ext fused: bad pred");
  for (const auto& t : others) {
    if (t.has_value() && t->defined()) {
      TORCH_CHECK(t->device().is_cpu() && t->is_contiguous(), "mmloss_ext fused: inputs must be contiguous CPU tensors");
      if (t->scalar_type() != at::kLong) TORCH_CHECK(t->scalar_type() == x.scalar_type(), "mmloss_ext fused: dtype mismatch");
    }
  }
}

// out_mode: 0 total (float64 scalar), 1 elementwise (pred's shape), 2 row sums (N,)
at::Tensor elementwise_forward(int64_t kind, std::vector<double> h, at::Tensor x, c10::optional<at::Tensor> target,
                               c10::optional<at::Tensor> labels, c10::optional<at::Tensor> score,
                               c10::optional<at::Tensor> wrow, c10::optional<at::Tensor> wfull, int64_t out_mode) {
  check_inputs(x, {target, labels, score, wrow, wfull});
  at::Tensor out = out_mode == 1   ? at::empty_like(x)
                   : out_mode == 2 ? at::empty({x.size(0)}, x.options())
                                   : at::empty({}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_elementwise_forward", [&] {
    Rows<scalar_t> a = make_rows<scalar_t>(x, target, labels, score, wrow, wfull);
    with_op<scalar_t>(kind, h, [&](const auto& op) {
      double total = forward_rows<scalar_t>(op, a, out_mode == 1 ? out.data_ptr<scalar_t>() : nullptr,
                                            out_mode == 2 ? out.data_ptr<scalar_t>() : nullptr);
      if (out_mode == 0) out.fill_(total);
    });
  });
  return out;
}

at::Tensor elementwise_backward(int64_t kind, std::vector<double> h, at::Tensor x, c10::optional<at::Tensor> target,
                                c10::optional<at::Tensor> labels, c10::optional<at::Tensor> score,
                                c10::optional<at::Tensor> wrow, c10::optional<at::Tensor> wfull, double gscale,
                                c10::optional<at::Tensor> grow, c10::optional<at::Tensor> gfull) {
  check_inputs(x, {target, labels, score, wrow, wfull, grow, gfull});
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_elementwise_backward", [&] {
    Rows<scalar_t> a = make_rows<scalar_t>(x, target, labels, score, wrow, wfull);
    with_op<scalar_t>(kind, h, [&](const auto& op) {
      backward_rows<scalar_t>(op, a, gscale, ptr_or_null<scalar_t>(grow), ptr_or_null<scalar_t>(gfull),
                              dx.data_ptr<scalar_t>());
    });
  });
  return dx;
}


// ---------------------------------------------------------------------------------------------
// boxes: one loss per (pred, target) pair, gradient w.r.t. pred by forward-mode duals (4 tangents)

template <typename T>
struct Dual {  // value and d/d(pred x1, y1, x2, y2)
  T v;
  T d[4];
  Dual(T value = T(0)) : v(value), d{T(0), T(0), T(0), T(0)} {}
  static Dual var(T value, int i) {
    Dual r(value);
    r.d[i] = T(1);
    return r;
  }
  Dual chain(T value, T slope) const {  // r = f(*this), f' = slope
    Dual r(value);
    for (int i = 0; i < 4; ++i) r.d[i] = slope * d[i];
    return r;
  }
};

template <typename T> inline T val(const T& x) { return x; }
template <typename T> inline T val(const Dual<T>& x) { return x.v; }

#define MMLOSS_DUAL_BINARY(OP, VALUE, DA, DB)                                              \
  template <typename T>                                                                    \
  inline Dual<T> operator OP(const Dual<T>& a, const Dual<T>& b) {                         \
    Dual<T> r(VALUE);                                                                      \
    for (int i = 0; i < 4; ++i) r.d[i] = (DA) * a.d[i] + (DB) * b.d[i];                    \
    return r;                                                                              \
  }                                                                                        \
  template <typename T>                                                                    \
  inline Dual<T> operator OP(const Dual<T>& a, T b) { return a OP Dual<T>(b); }            \
  template <typename T>                                                                    \
  inline Dual<T> operator OP(T a, const Dual<T>& b) { return Dual<T>(a) OP b; }
MMLOSS_DUAL_BINARY(+, a.v + b.v, T(1), T(1))
MMLOSS_DUAL_BINARY(-, a.v - b.v, T(1), T(-1))
MMLOSS_DUAL_BINARY(*, a.v * b.v, b.v, a.v)
MMLOSS_DUAL_BINARY(/, a.v / b.v, T(1) / b.v, -a.v / (b.v * b.v))
#undef MMLOSS_DUAL_BINARY

// torch's subgradients: max/min split the gradient on ties, clamp passes it on the boundary
template <typename T> inline T maxi(T a, T b) { return std::max(a, b); }
template <typename T> inline T mini(T a, T b) { return std::min(a, b); }
template <typename T> inline T clamp_min(T a, T lo) { return std::max(a, lo); }
template <typename T> inline T clamp2(T a, T lo, T hi) { return std::min(std::max(a, lo), hi); }
template <typename T> inline T atan_(T a) { return std::atan(a); }
template <typename T> inline T log_(T a) { return std::log(a); }
template <typename T>
inline Dual<T> pick(const Dual<T>& a, const Dual<T>& b, T wa) {  // wa * a + (1 - wa) * b (wa in {0, 1/2, 1})
  Dual<T> r(wa * a.v + (T(1) - wa) * b.v);
  for (int i = 0; i < 4; ++i) r.d[i] = wa * a.d[i] + (T(1) - wa) * b.d[i];
  return r;
}
template <typename T> inline Dual<T> maxi(const Dual<T>& a, const Dual<T>& b) {
  return pick(a, b, a.v > b.v ? T(1) : a.v == b.v ? T(0.5) : T(0));
}
template <typename T> inline Dual<T> mini(const Dual<T>& a, const Dual<T>& b) {
  return pick(a, b, a.v < b.v ? T(1) : a.v == b.v ? T(0.5) : T(0));
}
template <typename T> inline Dual<T> maxi(const Dual<T>& a, T b) { return maxi(a, Dual<T>(b)); }
template <typename T> inline Dual<T> mini(const Dual<T>& a, T b) { return mini(a, Dual<T>(b)); }
// branch-free (a mask times the tangents), so that the loop over boxes can vectorise
template <typename T> inline Dual<T> clamp_min(const Dual<T>& a, T lo) {
  Dual<T> r(std::max(a.v, lo));
  const T pass = a.v >= lo ? T(1) : T(0);
  for (int i = 0; i < 4; ++i) r.d[i] = pass * a.d[i];
  return r;
}
template <typename T> inline Dual<T> clamp2(const Dual<T>& a, T lo, T hi) {
  Dual<T> r(std::min(std::max(a.v, lo), hi));
  const T pass = (a.v >= lo) & (a.v <= hi) ? T(1) : T(0);
  for (int i = 0; i < 4; ++i) r.d[i] = pass * a.d[i];
  return r;
}
template <typename T> inline Dual<T> atan_(const Dual<T>& a) {
  return a.chain(std::atan(a.v), T(1) / (T(1) + a.v * a.v));
}
template <typename T> inline Dual<T> log_(const Dual<T>& a) { return a.chain(std::log(a.v), T(1) / a.v); }

enum BoxKind { kIoULinear = 0, kIoUSquare = 1, kIoULog = 2, kGIoU = 3, kDIoU = 4, kCIoU = 5 };

// the loss of one box pair: S = T (value) or Dual<T> (value and gradient); mirrors _boxes.BoxPair
template <int64_t kind, typename S, typename T>
S box_loss_one(T eps, T floor, S px1, S py1, S px2, S py2, T tx1, T ty1, T tx2, T ty2) {
  const T zero(0);
  S pw = clamp_min(px2 - px1, zero), ph = clamp_min(py2 - py1, zero);
  T tw = std::max(tx2 - tx1, zero), th = std::max(ty2 - ty1, zero);
  S iw = clamp_min(mini(px2, tx2) - maxi(px1, tx1), zero);
  S ih = clamp_min(mini(py2, ty2) - maxi(py1, ty1), zero);
  S inter = iw * ih;
  S uni = pw * ph + tw * th - inter + eps;
  S iou = inter / uni;
  if constexpr (kind == kIoULinear) return T(1) - clamp_min(iou, floor);
  if constexpr (kind == kIoUSquare) { S c = clamp_min(iou, floor); return T(1) - c * c; }
  if constexpr (kind == kIoULog) return T(0) - log_(clamp_min(iou, floor));
  S cw = clamp_min(maxi(px2, tx2) - mini(px1, tx1), zero);
  S ch = clamp_min(maxi(py2, ty2) - mini(py1, ty1), zero);
  if constexpr (kind == kGIoU) {
    S area = cw * ch + eps;
    return T(1) - (iou - (area - uni) / area);
  }
  S dx = ((tx1 - px1) + (tx2 - px2)) * T(0.5), dy = ((ty1 - py1) + (ty2 - py2)) * T(0.5);
  S diou = (dx * dx + dy * dy) / (cw * cw + ch * ch + eps);
  if constexpr (kind == kDIoU) return T(1) - (iou - diou);
  // CIoU, mmdet's form: alpha = [iou > 0.5] v / (1 - iou + v + eps) without gradient, clamp to [-1, 1]
  const T aspect = T(4.0 / (M_PI * M_PI));
  S da = atan_(S(tw / (th + eps))) - atan_(pw / (ph + eps));
  S v = aspect * da * da;
  const T iv = val(iou), vv = val(v);
  const T alpha = iv > T(0.5) ? vv / (T(1) - iv + vv + eps) : T(0);
  return T(1) - clamp2(iou - diou - alpha * v, T(-1), T(1));
}

template <typename F>
void with_box_kind(int64_t kind, F&& f) {  // the loss kind as a compile-time constant
  switch (kind) {
    case kIoULinear: f(std::integral_constant<int64_t, kIoULinear>()); break;
    case kIoUSquare: f(std::integral_constant<int64_t, kIoUSquare>()); break;
    case kIoULog: f(std::integral_constant<int64_t, kIoULog>()); break;
    case kGIoU: f(std::integral_constant<int64_t, kGIoU>()); break;
    case kDIoU: f(std::integral_constant<int64_t, kDIoU>()); break;
    case kCIoU: f(std::integral_constant<int64_t, kCIoU>()); break;
    default: TORCH_CHECK(false, "mmloss_ext fused: unknown box kind ", kind);
  }
}

// out_mode: 0 total (float64 scalar), 1 per box (N,); w: (N,) weight or undefined
at::Tensor box_forward(int64_t kind_id, double eps, double floor, at::Tensor pred, at::Tensor target,
                       c10::optional<at::Tensor> w, int64_t out_mode) {
  check_inputs(pred, {target, w});
  const int64_t n = pred.size(0);
  at::Tensor out = out_mode == 1 ? at::empty({n}, pred.options()) : at::empty({}, pred.options().dtype(at::kDouble));
  with_box_kind(kind_id, [&](auto k) {
  constexpr int64_t kind = decltype(k)::value;
  AT_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "mmloss_ext_box_forward", [&] {
    using T = scalar_t;
    const T* p = pred.data_ptr<T>();
    const T* t = target.data_ptr<T>();
    const T* wp = ptr_or_null<T>(w);
    T* o = out_mode == 1 ? out.data_ptr<T>() : nullptr;
    double total = at::parallel_reduce(0, n, 2048, 0.0, [&](int64_t b, int64_t e, double acc) {
      for (int64_t i = b; i < e; ++i) {
        const T* a = p + 4 * i;
        const T* c = t + 4 * i;
        T l = box_loss_one<kind, T, T>(T(eps), T(floor), a[0], a[1], a[2], a[3], c[0], c[1], c[2], c[3]);
        if (wp != nullptr) l *= wp[i];
        if (o != nullptr) o[i] = l; else acc += double(l);
      }
      return acc;
    }, std::plus<double>());
    if (out_mode == 0) out.fill_(total);
  });
  });
  return out;
}

// d pred = gscale * w[i] * gout[i] * d loss_i / d pred_i
at::Tensor box_backward(int64_t kind_id, double eps, double floor, at::Tensor pred, at::Tensor target,
                        c10::optional<at::Tensor> w, double gscale, c10::optional<at::Tensor> gout) {
  check_inputs(pred, {target, w, gout});
  const int64_t n = pred.size(0);
  at::Tensor dp = at::empty_like(pred);
  with_box_kind(kind_id, [&](auto k) {
  constexpr int64_t kind = decltype(k)::value;
  AT_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "mmloss_ext_box_backward", [&] {
    using T = scalar_t;
    using D = Dual<T>;
    const T* p = pred.data_ptr<T>();
    const T* t = target.data_ptr<T>();
    const T* wp = ptr_or_null<T>(w);
    const T* gp = ptr_or_null<T>(gout);
    T* g = dp.data_ptr<T>();
    at::parallel_for(0, n, 2048, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const T* a = p + 4 * i;
        const T* c = t + 4 * i;
        D l = box_loss_one<kind, D, T>(T(eps), T(floor), D::var(a[0], 0), D::var(a[1], 1), D::var(a[2], 2),
                                 D::var(a[3], 3), c[0], c[1], c[2], c[3]);
        T f = T(gscale);
        if (wp != nullptr) f *= wp[i];
        if (gp != nullptr) f *= gp[i];
        for (int k = 0; k < 4; ++k) g[4 * i + k] = f * l.d[k];
      }
    });
  });
  });
  return dp;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmloss_ext fused CPU kernels (see mmloss_ext/kernels/)";
  m.def("elementwise_forward", &elementwise_forward);
  m.def("elementwise_backward", &elementwise_backward);
  m.def("box_forward", &box_forward);
  m.def("box_backward", &box_backward);
#if defined(CPU_CAPABILITY_AVX512)
  m.attr("isa") = "AVX512";
#elif defined(CPU_CAPABILITY_AVX2)
  m.attr("isa") = "AVX2";
#else
  m.attr("isa") = "DEFAULT";
#endif
}
