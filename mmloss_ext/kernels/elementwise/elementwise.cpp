// Fused CPU kernels of the elementwise losses (focal, quality focal, varifocal, smooth L1 / L1,
// balanced L1): one pass over memory forward, one backward.
//
// The readable reference is the eager functional in mmloss_ext/losses/; these kernels compute the
// same formula and its analytic gradient, vectorised with ATen's at::vec (SLEEF exp/log1p/pow)
// and parallelised with at::parallel_for (torch's intra-op threads, OMP_NUM_THREADS).
//
// pred (N, K) against a dense target (N, K) or integer labels (N,) (one-hot, label K = background,
// with an optional per-row score: QFL), weighted by an optional per-row (N,) or full (N, K) weight;
// the forward writes the (N, K) loss, the (N,) row sums, or returns the total (never both). The
// backward gets the upstream gradient as a scalar (reduced losses), per row or per element.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include "../cpp/abi.h"
#include "../cpp/common.h"
#include "../cpp/registry.h"
#include "../cpp/vec_common.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace {

using namespace mmloss_ext;  // the kinds, out modes and constants of abi.h
using at::vec::Vectorized;

// ---------------------------------------------------------------------------------------------
// elementwise ops: loss(x, t) and d loss / d x, on vectors

// One exp per element: with e = exp(-|x|) in (0, 1], sigmoid(x) = 1/(1+e) (x >= 0) or e/(1+e),
// p (1 - p) = e/(1+e)^2, and softplus(-|x|) = log1p(e) = 2 atanh(s), s = e/(2+e) in [0, 1/3].
// In float32 both quotients come from one division, d = 1/((1+e)(2+e)), and atanh from its odd
// series, 2 s sum_k s^2k/(2k+1) up to k = 7 (truncation < 4e-9 relative, below float32's ulp);
// float64 keeps SLEEF's log1p (1 ulp) and an exact division.
template <typename T>
struct SigmoidParts {  // p = sigmoid(x), bce(x, t) = max(x, 0) - x t + log1p(exp(-|x|))
  using V = Vectorized<T>;
  V p, pq, softplus;  // pq = p (1 - p)
  explicit SigmoidParts(const V& x) {
    const V one(T(1));
    V e = fast_exp(x.abs().neg());
    V r;
    if constexpr (std::is_same_v<T, float>) {
      const V two(T(2)), a = one + e, b = two + e, d = one / (a * b);
      r = b * d;
      const V s = e * a * d, z = s * s;
      V poly(T(1) / T(15));
      for (int k = 13; k >= 1; k -= 2) poly = at::vec::fmadd(poly, z, V(T(1) / T(k)));
      softplus = two * s * poly;
    } else {
      r = one / (one + e);
      softplus = e.log1p();
    }
    sigmoid_from_exp(x, e, r, p, pq);
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
    return af * ((s.p - t) * qg + s.bce(x, t) * slope * (one - two * t) * s.pq);
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
    return d * qg + s.bce(x, t) * slope * sign_of(d) * s.pq;
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
    V d = s.p - t, qg, slope;
    pow_and_slope(d.abs(), gamma, qg, slope);
    V negative = V(alpha) * (d * qg + s.bce(x, t) * slope * sign_of(d) * s.pq);
    return V::blendv(negative, d * positive(t), t > V(T(0)));
  }
};

template <typename T>
struct SmoothL1Op {  // |d| < beta ? 0.5 d^2 / beta : |d| - 0.5 beta; beta < kSmoothL1MinBeta is L1
  using V = Vectorized<T>;
  T beta;
  bool l1;
  explicit SmoothL1Op(const std::vector<double>& h) : beta(T(h.at(0))), l1(h.at(0) < kSmoothL1MinBeta) {}
  V loss(const V& x, const V& t) const {
    V ad = (x - t).abs();
    if (l1) return ad;
    return V::blendv(ad - V(T(0.5) * beta), V(T(0.5)) * ad * ad / V(beta), ad < V(beta));
  }
  V grad(const V& x, const V& t) const {
    V d = x - t, s = sign_of(d);
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
    return sign_of(d) * V::blendv(V(gamma), inner, ad < V(beta));
  }
};

template <typename T>
struct Rows {  // raw views of the inputs of one elementwise call
  int64_t rows = 0, cols = 0;
  const T* x = nullptr;
  const T* target = nullptr;        // dense (N, K) target, or
  const int64_t* labels = nullptr;  // (N,) labels: one-hot, times `score` when given
  const T* score = nullptr;
  const T* wrow = nullptr;   // (N,) weight
  const T* wfull = nullptr;  // (N, K) weight
  Vectorized<T> iota = Vectorized<T>::arange(T(0), T(1));  // 0, 1, ..., size - 1

  Vectorized<T> target_at(int64_t n, int64_t c) const {
    using V = Vectorized<T>;
    const int64_t vs = V::size();
    if (target != nullptr) {
      const int64_t cnt = std::min(vs, cols - c);
      return cnt == vs ? V::loadu(target + n * cols + c) : V::loadu(target + n * cols + c, cnt);
    }
    const T hot = score != nullptr ? score[n] : T(1);
    return V::blendv(V(T(0)), V(hot), iota == V(T(labels[n] - c)));
  }
};

inline int64_t grain_rows(int64_t cols) { return rows_per_task(cols, 32768); }

// out_elem (N, K) or out_row (N,) when given; else the weighted total is returned.
template <typename T, typename Op>
double forward_rows(const Op& op, const Rows<T>& a, T* out_elem, T* out_row) {
  using V = Vectorized<T>;
  const int64_t vs = V::size();
  return at::parallel_reduce(0, a.rows, grain_rows(a.cols), 0.0, [&](int64_t begin, int64_t end, double total) {
    // float32 sums stay short: a row's vectors flush to double every 64 vectors (long rows); short
    // rows accumulate, weighted, into `acc`, flushed once 64 vectors or more went into it
    V acc(T(0));
    int64_t pending = 0;
    for (int64_t n = begin; n < end; ++n) {
      const T rw = a.wrow != nullptr ? a.wrow[n] : T(1);
      double row = 0.0;
      V racc(T(0));
      int64_t rpending = 0;
      for (int64_t c = 0; c < a.cols; c += vs) {
        const int64_t cnt = std::min(vs, a.cols - c), off = n * a.cols + c;
        prefetch_read(a.x + off);
        if (a.target != nullptr) prefetch_read(a.target + off);
        if (a.wfull != nullptr) prefetch_read(a.wfull + off);
        if (out_elem != nullptr) prefetch_write(out_elem + off);
        V l = op.loss(load(a.x + off, cnt), a.target_at(n, c));
        if (a.wfull != nullptr) l = l * load(a.wfull + off, cnt);
        if (out_elem != nullptr) {
          (l * V(rw)).store(out_elem + off, cnt);
          continue;
        }
        racc = racc + (cnt == vs ? l : V::set(V(T(0)), l, cnt));
        if (++rpending == 64) {
          row += hsum(racc);
          racc = V(T(0));
          rpending = 0;
        }
      }
      if (out_elem != nullptr) continue;
      if (out_row != nullptr) {
        out_row[n] = T((row + hsum(racc)) * double(rw));
        continue;
      }
      total += row * double(rw);
      acc = at::vec::fmadd(racc, V(rw), acc);
      pending += rpending;
      if (pending >= 64) {
        total += hsum(acc);
        acc = V(T(0));
        pending = 0;
      }
    }
    return total + hsum(acc);
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
        prefetch_read(a.x + off);
        if (a.target != nullptr) prefetch_read(a.target + off);
        if (a.wfull != nullptr) prefetch_read(a.wfull + off);
        if (gfull != nullptr) prefetch_read(gfull + off);
        prefetch_write(dx + off);
        V g = op.grad(load(a.x + off, cnt), a.target_at(n, c)) * V(f);
        if (a.wfull != nullptr) g = g * load(a.wfull + off, cnt);
        if (gfull != nullptr) g = g * load(gfull + off, cnt);
        g.store(dx + off, cnt);
      }
    }
  });
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
  a.labels = ptr_or_null<int64_t>(labels);
  a.score = ptr_or_null<T>(score);
  a.wrow = ptr_or_null<T>(wrow);
  a.wfull = ptr_or_null<T>(wfull);
  return a;
}

template <typename T, typename F>
void with_op(int64_t kind, const std::vector<double>& h, F&& f) {
  const int64_t expected = elementwise_hp_size(kind);
  TORCH_CHECK(expected >= 0, "mmloss_ext fused: unknown elementwise kind ", kind);
  TORCH_CHECK(int64_t(h.size()) == expected, "mmloss_ext fused: elementwise kind ", kind, " expects ", expected,
              " hyper-parameters, got ", h.size());
  switch (kind) {
    case kFocal: f(FocalOp<T>(h)); break;
    case kQualityFocal: f(QualityFocalOp<T>(h)); break;
    case kVarifocal: f(VarifocalOp<T>(h)); break;
    case kSmoothL1: f(SmoothL1Op<T>(h)); break;
    case kBalancedL1: f(BalancedL1Op<T>(h)); break;
    default: TORCH_CHECK(false, "mmloss_ext fused: unknown elementwise kind ", kind);
  }
}

void check_elementwise(const at::Tensor& x, std::initializer_list<c10::optional<at::Tensor>> others) {
  check_inputs("mmloss_ext fused elementwise", x, 1, /*exact=*/false, others, kAlsoLong);
}

// out_mode: kOutTotal (a float64 scalar), kOutElements (pred's shape) or kOutRows (row sums, (N,))
at::Tensor elementwise_forward(int64_t kind, std::vector<double> h, at::Tensor x, c10::optional<at::Tensor> target,
                               c10::optional<at::Tensor> labels, c10::optional<at::Tensor> score,
                               c10::optional<at::Tensor> wrow, c10::optional<at::Tensor> wfull, int64_t out_mode) {
  check_elementwise(x, {target, labels, score, wrow, wfull});
  check_out_mode(out_mode, /*rows=*/true);
  at::Tensor out = out_mode == kOutElements ? at::empty_like(x)
                   : out_mode == kOutRows   ? at::empty({x.size(0)}, x.options())
                                            : at::empty({}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_elementwise_forward", [&] {
    Rows<scalar_t> a = make_rows<scalar_t>(x, target, labels, score, wrow, wfull);
    with_op<scalar_t>(kind, h, [&](const auto& op) {
      double total = forward_rows<scalar_t>(op, a, out_mode == kOutElements ? out.data_ptr<scalar_t>() : nullptr,
                                            out_mode == kOutRows ? out.data_ptr<scalar_t>() : nullptr);
      if (out_mode == kOutTotal) out.fill_(total);
    });
  });
  return out;
}

at::Tensor elementwise_backward(int64_t kind, std::vector<double> h, at::Tensor x, c10::optional<at::Tensor> target,
                                c10::optional<at::Tensor> labels, c10::optional<at::Tensor> score,
                                c10::optional<at::Tensor> wrow, c10::optional<at::Tensor> wfull, double gscale,
                                c10::optional<at::Tensor> grow, c10::optional<at::Tensor> gfull) {
  check_elementwise(x, {target, labels, score, wrow, wfull, grow, gfull});
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

void register_elementwise(pybind11::module_& m) {
  m.def("elementwise_forward", &elementwise_forward);
  m.def("elementwise_backward", &elementwise_backward);
}

}  // namespace

MMLOSS_REGISTER_OP(register_elementwise);
