// Fused CPU kernels of the IoU-family box losses: pred and target (N, 4) x1y1x2y2, one loss per box,
// one pass over memory forward, one backward.
//
// The readable reference is the eager functional in mmloss_ext/losses/ (mirrored term by term
// through _boxes.BoxPair); these kernels compute the same formula and its gradient, a vector lane
// per box, vectorised with ATen's at::vec and parallelised with at::parallel_for. The backward gets
// the upstream gradient as a scalar (reduced losses) or per box.
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

using namespace mmloss_ext;  // the kinds, out modes and constants of abi.h, the shared helpers
using at::vec::maximum;
using at::vec::minimum;
using at::vec::Vectorized;

// ---------------------------------------------------------------------------------------------
// boxes: one loss per (pred, target) pair, vectorised over boxes (a vector lane per box, the
// (N, 4) rows transposed to one vector per coordinate), gradient w.r.t. pred in reverse mode:
// one backward sweep through the formula, derived by hand below. Subgradients as torch's:
// maximum/minimum split the gradient on ties, clamp passes it on the boundary (x >= lo, x <= hi).

// boxes [i, i + cnt) of an (N, 4) array as one vector per coordinate; lanes >= cnt repeat box i
template <typename T>
inline void load_boxes(const T* p, int64_t cnt, Vectorized<T> out[4]) {
  constexpr int64_t vs = Vectorized<T>::size();
  for (int64_t k = 0; k < 4; ++k) prefetch_read(p + k * vs);
  alignas(64) T buf[4][vs];
  for (int64_t j = 0; j < vs; ++j)
    for (int k = 0; k < 4; ++k) buf[k][j] = p[4 * (j < cnt ? j : 0) + k];
  for (int k = 0; k < 4; ++k) out[k] = Vectorized<T>::loadu(buf[k]);
}

template <typename T>
inline void store_boxes(T* p, int64_t cnt, const Vectorized<T> in[4]) {
  constexpr int64_t vs = Vectorized<T>::size();
  for (int64_t k = 0; k < 4; ++k) prefetch_write(p + k * vs);
  alignas(64) T buf[4][vs];
  for (int k = 0; k < 4; ++k) in[k].store(buf[k]);
  for (int64_t j = 0; j < cnt; ++j)
    for (int k = 0; k < 4; ++k) p[4 * j + k] = buf[k][j];
}

// d max(a, b) / d a and d min(a, b) / d a: 1, 1/2 on a tie, else 0
template <typename V> inline V max_share(const V& a, const V& b) { return a.gt(b) + V(0.5) * a.eq(b); }
template <typename V> inline V min_share(const V& a, const V& b) { return a.lt(b) + V(0.5) * a.eq(b); }

// A denominator d guarded as _boxes.guard: max(d, eps) (kAdded false), or d + eps (kAdded: the kinds of
// abi.py's BOX_EPS_ADDED, as mmdet's code of those losses); guard_pass is d guard(d) / d d (clamp: 0 below eps)
template <bool kAdded, typename V>
inline V guard(const V& d, const V& eps) {
  if constexpr (kAdded) return d + eps;
  else return maximum(d, eps);
}
template <bool kAdded, typename V>
inline V guard_pass(const V& d, const V& eps) {
  if constexpr (kAdded) return V(1);
  else return d.ge(eps);
}

// The kinds and their hyper-parameters hp: abi.h (mmloss_ext/core/abi.py's BoxKind and BOX_HP).
template <typename T>
struct BoxHp {
  T eps, h0;  // eps, hp[0] or 0
  BoxHp(double eps_, const std::vector<double>& hp) : eps(T(eps_)), h0(T(hp.empty() ? 0.0 : hp[0])) {}
};

// What a kind needs of the geometry; the loss helpers below split the kinds as the Triton kernels do
template <int64_t kind>
struct BoxTerms {
  static constexpr bool iou = kind != kExtendedIoU;  // Extended-IoU has its own (signed) intersection
  static constexpr bool enclosure = kind == kGIoU || kind == kDIoU || kind == kCIoU || kind == kSIoU ||
                                    kind == kEfficientIoU || kind == kWIoU;  // C_w, C_h
  static constexpr bool centre = kind == kDIoU || kind == kCIoU || kind == kSIoU || kind == kEfficientIoU ||
                                 kind == kWIoU;  // centre offset
  static constexpr bool added = box_eps_added(kind);  // the guard of the denominators: d + eps or max(d, eps)
};

// The forward geometry of vs box pairs (p, t: x1, y1, x2, y2 per vector), as _boxes.BoxPair: sizes
// (clamped at 0), intersection corners, union and IoU, enclosure, centre offset (the last three
// only where the kind uses them).
template <int64_t kind, typename T>
struct BoxGeometry {
  using V = Vectorized<T>;
  using Terms = BoxTerms<kind>;
  const V* p;
  const V* t;
  V eps, pwr, phr, pw, ph, twr, thr, tw, th, lx, ly, rx, ry, iwr, ihr;
  V iw, ih, unr, uni, iou;  // Terms::iou
  V cwr, chr, cw, ch;       // Terms::enclosure
  V dx, dy;                 // Terms::centre
  BoxGeometry(const V p_[4], const V t_[4], T eps_) : p(p_), t(t_), eps(eps_) {
    const V zero(T(0)), half(T(0.5));
    pwr = p[2] - p[0], phr = p[3] - p[1];
    pw = maximum(pwr, zero), ph = maximum(phr, zero);
    twr = t[2] - t[0], thr = t[3] - t[1];
    tw = maximum(twr, zero), th = maximum(thr, zero);
    lx = maximum(p[0], t[0]), ly = maximum(p[1], t[1]), rx = minimum(p[2], t[2]), ry = minimum(p[3], t[3]);
    iwr = rx - lx, ihr = ry - ly;
    if constexpr (Terms::iou) {
      iw = maximum(iwr, zero);
      ih = maximum(ihr, zero);
      unr = pw * ph + tw * th - iw * ih;
      uni = guard<Terms::added>(unr, eps);
      iou = iw * ih / uni;
    }
    if constexpr (Terms::enclosure) {
      cwr = maximum(p[2], t[2]) - minimum(p[0], t[0]);
      chr = maximum(p[3], t[3]) - minimum(p[1], t[1]);
      cw = maximum(cwr, zero);
      ch = maximum(chr, zero);
    }
    if constexpr (Terms::centre) {
      dx = ((t[0] - p[0]) + (t[2] - p[2])) * half;
      dy = ((t[1] - p[1]) + (t[3] - p[3])) * half;
    }
  }
};

// d loss / d (iou, union, enclosing w and h, centre offset, clamped pred w and h, raw pred w and h,
// intersection corners, enclosure's top-left corner): what a kind's loss fills in, the chain rule
// of box_grad takes it to d loss / d pred
template <typename T>
struct BoxAdjoints {
  using V = Vectorized<T>;
  V d_iou = V(T(0)), d_uni = V(T(0)), d_cw = V(T(0)), d_ch = V(T(0)), d_dx = V(T(0)), d_dy = V(T(0));
  V d_pw = V(T(0)), d_ph = V(T(0)), d_pwr = V(T(0)), d_phr = V(T(0)), d_lx = V(T(0)), d_ly = V(T(0));
  V d_rx = V(T(0)), d_ry = V(T(0)), d_ex = V(T(0)), d_ey = V(T(0));
};

// 1 - IoU, 1 - IoU^2, -log(IoU), the IoU clamped below at `floor`
template <int64_t kind, typename T>
inline Vectorized<T> iou_loss(const BoxGeometry<kind, T>& b, T floor, BoxAdjoints<T>& d) {
  using V = Vectorized<T>;
  const V zero(T(0)), one(T(1)), two(T(2));
  const V c = maximum(b.iou, V(floor)), pass = b.iou.ge(V(floor));
  if constexpr (kind == kIoULinear) {
    d.d_iou = zero - pass;
    return one - c;
  } else if constexpr (kind == kIoUSquare) {
    d.d_iou = zero - two * c * pass;
    return one - c * c;
  } else {
    d.d_iou = zero - pass / c;
    return zero - c.log();
  }
}

// 1 - (iou - (area - union) / area), area = guard(cw ch)
template <int64_t kind, bool grad, typename T>
inline Vectorized<T> giou_loss(const BoxGeometry<kind, T>& b, BoxAdjoints<T>& d) {
  using V = Vectorized<T>;
  constexpr bool added = BoxTerms<kind>::added;
  const V zero(T(0)), one(T(1));
  const V ar = b.cw * b.ch, area = guard<added>(ar, b.eps);
  d.d_iou = zero - one;
  if constexpr (grad) {
    const V inv = one / area, d_area = b.uni * inv * inv * guard_pass<added>(ar, b.eps);
    d.d_uni = zero - inv;
    d.d_cw = d_area * b.ch;
    d.d_ch = d_area * b.cw;
  }
  return one - (b.iou - (area - b.uni) / area);
}

// the kinds with a centre-distance penalty rho^2 / diag^2, diag^2 = guard(cw^2 + ch^2):
// DIoU: 1 - (iou - rho^2 / diag^2); CIoU: 1 - clamp(iou - (rho^2 / diag^2 + alpha v), -1, 1);
// Efficient-IoU: 1 - (iou - (rho^2 / diag^2 + (pwr - twr)^2 / guard(cw^2) + (phr - thr)^2 / guard(ch^2)))
template <int64_t kind, bool grad, typename T>
inline Vectorized<T> centre_loss(const BoxGeometry<kind, T>& b, BoxAdjoints<T>& d) {
  using V = Vectorized<T>;
  constexpr bool added = BoxTerms<kind>::added;
  const V zero(T(0)), one(T(1)), half(T(0.5)), two(T(2)), eps = b.eps;
  const V &cw = b.cw, &ch = b.ch, &dx = b.dx, &dy = b.dy, &iou = b.iou;
  const V dgr = cw * cw + ch * ch, diag = guard<added>(dgr, eps), pen = (dx * dx + dy * dy) / diag;
  V loss, d_pen;
  if constexpr (kind == kDIoU) {
    loss = one - (iou - pen);
    d.d_iou = zero - one;
    d_pen = one;
  } else if constexpr (kind == kEfficientIoU) {
    const V cwr2 = cw * cw, chr2 = ch * ch, cw2 = guard<added>(cwr2, eps), ch2 = guard<added>(chr2, eps);
    const V ddw = b.pwr - b.twr, ddh = b.phr - b.thr, ew = ddw * ddw / cw2, eh = ddh * ddh / ch2;
    loss = one - (iou - (pen + ew + eh));
    d.d_iou = zero - one;
    d_pen = one;
    if constexpr (grad) {
      d.d_pwr = two * ddw / cw2;
      d.d_phr = two * ddh / ch2;
      d.d_cw = zero - two * cw * ew / cw2 * guard_pass<added>(cwr2, eps);
      d.d_ch = zero - two * ch * eh / ch2 * guard_pass<added>(chr2, eps);
    }
  } else {
    const V aspect(T(4.0 / (M_PI * M_PI)));
    const V hpe = guard<added>(b.ph, eps), a = b.pw / hpe;
    const V da = (b.tw / guard<added>(b.th, eps)).atan() - a.atan();
    const V v = aspect * da * da, den = one - iou + v;
    // no gradient (mmdet); no eps (mmdet): 0 where den = 0 (then v = 0), else v / den <= 1
    const V alpha = V::blendv(zero, v / den, (iou > half) & (den > zero));
    const V score = iou - (pen + alpha * v);
    loss = one - minimum(maximum(score, V(T(-1))), one);
    d.d_iou = zero - score.ge(V(T(-1))) * score.le(one);
    d_pen = zero - d.d_iou;
    if constexpr (grad) {  // v = aspect (atan(tw / guard(th)) - atan(pw / hpe))^2
      const V k = d_pen * alpha * aspect * two * da / ((one + a * a) * hpe);
      d.d_pw = zero - k;
      d.d_ph = k * a * guard_pass<added>(b.ph, eps);
    }
  }
  if constexpr (grad) {
    const V d_diag = zero - d_pen * pen / diag * guard_pass<added>(dgr, eps);
    d.d_dx = d_pen * two * dx / diag;
    d.d_dy = d_pen * two * dy / diag;
    d.d_cw = d.d_cw + d_diag * two * cw;
    d.d_ch = d.d_ch + d_diag * two * ch;
  }
  return loss;
}

// Wise-IoU v1: exp(rho^2 / diag*) (1 - iou), diag* = guard(cw^2 + ch^2) detached
template <int64_t kind, bool grad, typename T>
inline Vectorized<T> wiou_loss(const BoxGeometry<kind, T>& b, BoxAdjoints<T>& d) {
  using V = Vectorized<T>;
  const V zero(T(0)), one(T(1)), two(T(2));
  const V &dx = b.dx, &dy = b.dy;
  const V diag = guard<BoxTerms<kind>::added>(b.cw * b.cw + b.ch * b.ch, b.eps),
          e = ((dx * dx + dy * dy) / diag).exp(), liou = one - b.iou;
  if constexpr (grad) {
    d.d_iou = zero - e;
    const V d_rho2 = e * liou / diag;
    d.d_dx = d_rho2 * two * dx;
    d.d_dy = d_rho2 * two * dy;
  }
  return e * liou;
}

// SIoU: 1 - clamp(iou - (distance + shape) / 2, -1, 1), as _boxes.siou_penalty:
// s = centre offset + eps; angle = 2 |sx sy| / max(sx^2 + sy^2, kSIoUOffset2Min); gamma = +-(angle - 2);
// distance = -expm1(gamma rho_x) - expm1(gamma rho_y), rho_x = (sx / max(cw, eps))^2;
// shape = sum (-expm1(-omega))^4, omega_w = |pw - tw| / max(max(pw, tw), eps) (mmdet: no eps),
// omega_h = |ph - th| / guard(max(ph, th)) (mmdet: + eps)
template <int64_t kind, bool grad, typename T>
inline Vectorized<T> siou_loss(const BoxGeometry<kind, T>& b, bool neg_gamma, BoxAdjoints<T>& d) {
  using V = Vectorized<T>;
  constexpr bool added = BoxTerms<kind>::added;
  const V zero(T(0)), one(T(1)), half(T(0.5)), two(T(2)), eps = b.eps;
  const V &pw = b.pw, &ph = b.ph, &tw = b.tw, &th = b.th, &cw = b.cw, &ch = b.ch;
  const V s2min = V(T(kSIoUOffset2Min));
  const V sx = b.dx + eps, sy = b.dy + eps, q = sx * sy, s2 = sx * sx + sy * sy, den = maximum(s2, s2min);
  const V angle = two * q.abs() / den;
  const V gamma = neg_gamma ? angle - two : two - angle;
  const V cwc = maximum(cw, eps), chc = maximum(ch, eps), ux = sx / cwc, uy = sy / chc;
  const V rx2 = ux * ux, ry2 = uy * uy;
  // the exponents capped at kSIoUExpMax: past it the loss's clamp saturates anyway
  const V cap = V(T(kSIoUExpMax)), ax = gamma * rx2, ay = gamma * ry2, kx = ax.le(cap), ky = ay.le(cap);
  const V emx = minimum(ax, cap).expm1(), emy = minimum(ay, cap).expm1();
  const V distance = zero - emx - emy;
  const V aw = pw - tw, ah = ph - th, mwr = maximum(pw, tw), mhr = maximum(ph, th);
  const V mw = guard<false>(mwr, eps), mh = guard<added>(mhr, eps);
  const V ow = aw.abs() / mw, oh = ah.abs() / mh;
  const V sw = zero - (zero - ow).expm1(), sh = zero - (zero - oh).expm1();
  const V sw2 = sw * sw, sh2 = sh * sh;
  const V pen = half * (distance + (sw2 * sw2 + sh2 * sh2));
  const V score = b.iou - pen;
  if constexpr (grad) {
    d.d_iou = zero - score.ge(V(T(-1))) * score.le(one);
    const V d_part = half * (zero - d.d_iou);  // d loss / d distance = d loss / d shape
    // distance
    const V ex = emx + one, ey = emy + one;
    const V d_ax = zero - d_part * ex * kx, d_ay = zero - d_part * ey * ky;
    const V d_gamma = d_ax * rx2 + d_ay * ry2, d_rx2 = d_ax * gamma, d_ry2 = d_ay * gamma;
    const V d_angle = neg_gamma ? d_gamma : zero - d_gamma;
    const V d_q = d_angle * two * sign_of(q) / den;
    const V d_s2 = zero - d_angle * angle / den * s2.ge(s2min);
    d.d_dx = d_q * sy + d_s2 * two * sx + d_rx2 * two * ux / cwc;
    d.d_dy = d_q * sx + d_s2 * two * sy + d_ry2 * two * uy / chc;
    d.d_cw = zero - d_rx2 * two * rx2 / cwc * cw.ge(eps);
    d.d_ch = zero - d_ry2 * two * ry2 / chc * ch.ge(eps);
    // shape: d (1 - e^-omega)^4 / d omega = 4 (1 - e^-omega)^3 e^-omega
    const V d_ow = d_part * V(T(4)) * sw2 * sw * (one - sw), d_oh = d_part * V(T(4)) * sh2 * sh * (one - sh);
    const V d_mw = zero - d_ow * ow / mw * guard_pass<false>(mwr, eps);
    const V d_mh = zero - d_oh * oh / mh * guard_pass<added>(mhr, eps);
    d.d_pw = d_ow * sign_of(aw) / mw + d_mw * max_share(pw, tw);
    d.d_ph = d_oh * sign_of(ah) / mh + d_mh * max_share(ph, th);
  }
  return one - minimum(maximum(score, V(T(-1))), one);
}

// Extended-IoU, mmdet's eiou_loss: smooth_l1(1 - I / guard(|A| + |B| - I), smooth_point) with the
// signed intersection I, from the intersection corners and the enclosure's top-left (ex, ey)
template <int64_t kind, bool grad, typename T>
inline Vectorized<T> extended_iou_loss(const BoxGeometry<kind, T>& b, T smooth_point, BoxAdjoints<T>& d) {
  using V = Vectorized<T>;
  constexpr bool added = BoxTerms<kind>::added;
  const V zero(T(0)), one(T(1)), half(T(0.5));
  const V &lx = b.lx, &ly = b.ly, &rx = b.rx, &ry = b.ry;
  const V ex = minimum(b.p[0], b.t[0]), ey = minimum(b.p[1], b.t[1]);
  const V xmin = minimum(lx, rx), xmax = maximum(lx, rx), ymin = minimum(ly, ry), ymax = maximum(ly, ry);
  const V a = rx - ex, c = ry - ey, cx = xmin - ex, cy = ymin - ey, ddx = lx - ex, ddy = ymax - ey;
  const V fx = xmax - ex, fy = ly - ey;
  const V inter = a * c + cx * cy - ddx * ddy - fx * fy;
  const V unr_e = b.pw * b.ph + b.tw * b.th - inter, uni_e = guard<added>(unr_e, b.eps), r = inter / uni_e;
  const V l0 = one - r, sp(smooth_point);
  const auto quad = l0 < sp;
  if constexpr (grad) {
    const V d_l0 = V::blendv(one, l0 / sp, quad);
    // r = I / U, U = guard(|A| + |B| - I), s = d U / d(|A| + |B| - I): dr/dI = (1 + r s) / U, dr/d|A| = -r s / U
    const V rs = r * guard_pass<added>(unr_e, b.eps);
    const V d_inter = zero - d_l0 * (one + rs) / uni_e, d_ap = d_l0 * rs / uni_e;
    d.d_pw = d_ap * b.ph;
    d.d_ph = d_ap * b.pw;
    const V da = d_inter * c, dc = d_inter * a, dcx = d_inter * cy, dcy = d_inter * cx;
    const V dddx = zero - d_inter * ddy, dddy = zero - d_inter * ddx, dfx = zero - d_inter * fy,
            dfy = zero - d_inter * fx;
    d.d_ex = zero - (da + dcx + dddx + dfx);
    d.d_ey = zero - (dc + dcy + dddy + dfy);
    d.d_rx = da + dcx * min_share(rx, lx) + dfx * max_share(rx, lx);
    d.d_lx = dddx + dcx * min_share(lx, rx) + dfx * max_share(lx, rx);
    d.d_ry = dc + dcy * min_share(ry, ly) + dddy * max_share(ry, ly);
    d.d_ly = dfy + dcy * min_share(ly, ry) + dddy * max_share(ly, ry);
  }
  return V::blendv(l0 - half * sp, half * l0 * l0 / sp, quad);
}

// iou = inter / union; union = guard(unr), unr = pw ph + tw th - inter; inter = iw ih: d_iou and
// d_uni to the clamped pred sizes and the intersection corners
template <int64_t kind, typename T>
inline void iou_adjoints(const BoxGeometry<kind, T>& b, BoxAdjoints<T>& d) {
  using V = Vectorized<T>;
  const V zero(T(0));
  d.d_uni = (d.d_uni - d.d_iou * b.iou / b.uni) * guard_pass<BoxTerms<kind>::added>(b.unr, b.eps);
  const V d_inter = d.d_iou / b.uni - d.d_uni;
  d.d_pw = d.d_pw + d.d_uni * b.ph;
  d.d_ph = d.d_ph + d.d_uni * b.pw;
  const V d_iwr = d_inter * b.ih * b.iwr.ge(zero), d_ihr = d_inter * b.iw * b.ihr.ge(zero);
  d.d_rx = d_iwr;  // iwr = rx - lx
  d.d_lx = zero - d_iwr;
  d.d_ry = d_ihr;
  d.d_ly = zero - d_ihr;
}

// d loss / d pred from the adjoints: through the sizes, the intersection corners, the centre
// offset, the enclosure and Extended-IoU's enclosure corner
template <int64_t kind, typename T>
inline void box_grad(const BoxGeometry<kind, T>& b, const BoxAdjoints<T>& d, Vectorized<T> g[4]) {
  using V = Vectorized<T>;
  using Terms = BoxTerms<kind>;
  const V zero(T(0)), half(T(0.5));
  const V* p = b.p;
  const V* t = b.t;
  // pw = max(pwr, 0), pwr = px2 - px1
  const V d_pwr = d.d_pwr + d.d_pw * b.pwr.ge(zero);
  const V d_phr = d.d_phr + d.d_ph * b.phr.ge(zero);
  // lx = max(px1, tx1), rx = min(px2, tx2)
  g[0] = d.d_lx * max_share(p[0], t[0]) - d_pwr;
  g[1] = d.d_ly * max_share(p[1], t[1]) - d_phr;
  g[2] = d.d_rx * min_share(p[2], t[2]) + d_pwr;
  g[3] = d.d_ry * min_share(p[3], t[3]) + d_phr;
  if constexpr (Terms::centre) {  // dx = (tx1 - px1 + tx2 - px2) / 2
    g[0] = g[0] - half * d.d_dx;
    g[1] = g[1] - half * d.d_dy;
    g[2] = g[2] - half * d.d_dx;
    g[3] = g[3] - half * d.d_dy;
  }
  if constexpr (Terms::enclosure) {  // cwr = max(px2, tx2) - min(px1, tx1)
    const V d_cwr = d.d_cw * b.cwr.ge(zero), d_chr = d.d_ch * b.chr.ge(zero);
    g[0] = g[0] - d_cwr * min_share(p[0], t[0]);
    g[1] = g[1] - d_chr * min_share(p[1], t[1]);
    g[2] = g[2] + d_cwr * max_share(p[2], t[2]);
    g[3] = g[3] + d_chr * max_share(p[3], t[3]);
  }
  if constexpr (kind == kExtendedIoU) {  // ex = min(px1, tx1)
    g[0] = g[0] + d.d_ex * min_share(p[0], t[0]);
    g[1] = g[1] + d.d_ey * min_share(p[1], t[1]);
  }
}

// The losses of vs box pairs (p, t: x1, y1, x2, y2 per vector), mirroring _boxes.BoxPair and the
// eager losses term by term; with `grad`, also d loss / d p into g (a reverse sweep: the kind's
// adjoints, then the IoU's, then the geometry's).
template <int64_t kind, bool grad, typename T>
inline Vectorized<T> box_eval(const BoxHp<T>& hp, const Vectorized<T> p[4], const Vectorized<T> t[4],
                              Vectorized<T> g[4]) {
  const BoxGeometry<kind, T> b(p, t, hp.eps);
  BoxAdjoints<T> d;
  Vectorized<T> loss;
  if constexpr (kind == kIoULinear || kind == kIoUSquare || kind == kIoULog) {
    loss = iou_loss<kind>(b, hp.h0, d);
  } else if constexpr (kind == kGIoU) {
    loss = giou_loss<kind, grad>(b, d);
  } else if constexpr (kind == kDIoU || kind == kCIoU || kind == kEfficientIoU) {
    loss = centre_loss<kind, grad>(b, d);
  } else if constexpr (kind == kWIoU) {
    loss = wiou_loss<kind, grad>(b, d);
  } else if constexpr (kind == kSIoU) {
    loss = siou_loss<kind, grad>(b, hp.h0 != T(0), d);
  } else {
    static_assert(kind == kExtendedIoU, "a box kind without its loss");
    loss = extended_iou_loss<kind, grad>(b, hp.h0, d);
  }
  if constexpr (grad) {
    if constexpr (BoxTerms<kind>::iou) iou_adjoints(b, d);
    box_grad(b, d, g);
  }
  return loss;
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
    case kExtendedIoU: f(std::integral_constant<int64_t, kExtendedIoU>()); break;
    case kSIoU: f(std::integral_constant<int64_t, kSIoU>()); break;
    case kEfficientIoU: f(std::integral_constant<int64_t, kEfficientIoU>()); break;
    case kWIoU: f(std::integral_constant<int64_t, kWIoU>()); break;
    default: TORCH_CHECK(false, "mmloss_ext fused: unknown box kind ", kind);
  }
}

void check_boxes(const at::Tensor& pred, std::initializer_list<c10::optional<at::Tensor>> others) {
  check_inputs("mmloss_ext fused boxes", pred, 1, /*exact=*/false, others, kPredDtypeOnly);
}

void check_box_hp(int64_t kind, const std::vector<double>& hp) {
  const int64_t expected = box_hp_size(kind);
  TORCH_CHECK(expected >= 0, "mmloss_ext fused: unknown box kind ", kind);
  TORCH_CHECK(int64_t(hp.size()) == expected, "mmloss_ext fused: box kind ", kind, " expects ", expected,
              " hyper-parameters, got ", hp.size());
}

// out_mode: kOutTotal (a float64 scalar) or kOutElements (per box, (N,)); w: (N,) weight or undefined
at::Tensor box_forward(int64_t kind_id, double eps, std::vector<double> hp, at::Tensor pred, at::Tensor target,
                       c10::optional<at::Tensor> w, int64_t out_mode) {
  check_boxes(pred, {target, w});
  check_box_hp(kind_id, hp);
  check_out_mode(out_mode, /*rows=*/false);
  const int64_t n = pred.size(0);
  at::Tensor out = out_mode == kOutElements ? at::empty({n}, pred.options())
                                            : at::empty({}, pred.options().dtype(at::kDouble));
  with_box_kind(kind_id, [&](auto k) {
  constexpr int64_t kind = decltype(k)::value;
  AT_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "mmloss_ext_box_forward", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    constexpr int64_t vs = V::size();
    const BoxHp<T> h(eps, hp);
    const T* p = pred.data_ptr<T>();
    const T* t = target.data_ptr<T>();
    const T* wp = ptr_or_null<T>(w);
    T* o = out_mode == kOutElements ? out.data_ptr<T>() : nullptr;
    double total = at::parallel_reduce(0, n, 4096, 0.0, [&](int64_t b, int64_t e, double sum) {
      V acc(T(0)), pv[4], tv[4];
      int64_t pending = 0;
      for (int64_t i = b; i < e; i += vs) {
        const int64_t cnt = std::min(vs, e - i);
        load_boxes(p + 4 * i, cnt, pv);
        load_boxes(t + 4 * i, cnt, tv);
        V l = box_eval<kind, false, T>(h, pv, tv, nullptr);
        if (wp != nullptr) l = l * load(wp + i, cnt);
        if (o != nullptr) {
          l.store(o + i, cnt);
          continue;
        }
        acc = acc + (cnt == vs ? l : V::set(V(T(0)), l, cnt));
        if (++pending == 64) {  // flush to double now and then: accurate totals in float32
          sum += hsum(acc);
          acc = V(T(0));
          pending = 0;
        }
      }
      return sum + hsum(acc);
    }, std::plus<double>());
    if (out_mode == kOutTotal) out.fill_(total);
  });
  });
  return out;
}

// d pred = gscale * w[i] * gout[i] * d loss_i / d pred_i
at::Tensor box_backward(int64_t kind_id, double eps, std::vector<double> hp, at::Tensor pred, at::Tensor target,
                        c10::optional<at::Tensor> w, double gscale, c10::optional<at::Tensor> gout) {
  check_boxes(pred, {target, w, gout});
  check_box_hp(kind_id, hp);
  const int64_t n = pred.size(0);
  at::Tensor dp = at::empty_like(pred);
  with_box_kind(kind_id, [&](auto k) {
  constexpr int64_t kind = decltype(k)::value;
  AT_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "mmloss_ext_box_backward", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    constexpr int64_t vs = V::size();
    const BoxHp<T> h(eps, hp);
    const T* p = pred.data_ptr<T>();
    const T* t = target.data_ptr<T>();
    const T* wp = ptr_or_null<T>(w);
    const T* gp = ptr_or_null<T>(gout);
    T* g = dp.data_ptr<T>();
    at::parallel_for(0, n, 4096, [&](int64_t b, int64_t e) {
      V pv[4], tv[4], gv[4];
      for (int64_t i = b; i < e; i += vs) {
        const int64_t cnt = std::min(vs, e - i);
        load_boxes(p + 4 * i, cnt, pv);
        load_boxes(t + 4 * i, cnt, tv);
        box_eval<kind, true, T>(h, pv, tv, gv);
        V f = V(T(gscale));
        if (wp != nullptr) f = f * load(wp + i, cnt);
        if (gp != nullptr) f = f * load(gp + i, cnt);
        for (int c = 0; c < 4; ++c) gv[c] = gv[c] * f;
        store_boxes(g + 4 * i, cnt, gv);
      }
    });
  });
  });
  return dp;
}

void register_boxes(pybind11::module_& m) {
  m.def("box_forward", &box_forward);
  m.def("box_backward", &box_backward);
}

}  // namespace

MMLOSS_REGISTER_OP(register_boxes);
