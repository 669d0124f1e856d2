"""The box kernels in Triton: ``box_forward`` / ``box_backward`` with the interface of the C++
ones (``boxes.cpp``), one program per ``BLOCK`` boxes. The loss and its adjoints come from one
helper per kind or group of kinds (:func:`_iou_loss`, :func:`_giou_loss`, :func:`_centre_loss`,
:func:`_siou_loss`, :func:`_wiou_loss`, :func:`_extended_iou_loss`), the gradient of the 4
coordinates from one chain-rule helper (:func:`_box_grad`), mirroring the eager functionals of
:mod:`mmloss_ext.losses` term by term. The kinds, their ids and hyper-parameters are
:class:`~mmloss_ext.core.abi.BoxKind` and :data:`~mmloss_ext.core.abi.BOX_HP`; the shared helpers
and conventions are :mod:`..triton_common`'s.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Union

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...core.abi import BOX_EPS_ADDED, BOX_HP, SIOU_EXP_MAX, SIOU_OFFSET2_MIN, BoxKind, OutMode
from ..triton_common import (atan_pos, check, const, epilogue, expm1, floats, member, needs_int64, opt, out_mode_of,
                             program_block, scale_tensor, sign, times_upstream, weigh)

__all__ = ['box_forward', 'box_backward']

_BLOCK_BOX = 256   # boxes per program
_ASPECT = tl.constexpr(4.0 / math.pi ** 2)  # CIoU's 4 / pi^2
_SIOU_EXP_MAX = tl.constexpr(SIOU_EXP_MAX)
_SIOU_OFFSET2_MIN = tl.constexpr(SIOU_OFFSET2_MIN)

# the kind ids (core/abi.py) as compile-time constants of the kernels
_IOU_LINEAR = tl.constexpr(int(BoxKind.IOU_LINEAR))
_IOU_SQUARE = tl.constexpr(int(BoxKind.IOU_SQUARE))
_IOU_LOG = tl.constexpr(int(BoxKind.IOU_LOG))
_GIOU = tl.constexpr(int(BoxKind.GIOU))
_DIOU = tl.constexpr(int(BoxKind.DIOU))
_CIOU = tl.constexpr(int(BoxKind.CIOU))
_EXTENDED_IOU = tl.constexpr(int(BoxKind.EXTENDED_IOU))
_SIOU = tl.constexpr(int(BoxKind.SIOU))
_EFFICIENT_IOU = tl.constexpr(int(BoxKind.EFFICIENT_IOU))
_WIOU = tl.constexpr(int(BoxKind.WIOU))


# ---------------------------------------------------------------------------------------------
# boxes: the loss of one (pred, target) pair and its gradient for pred, by a hand-derived reverse
# sweep (subgradients as torch's: max/min split ties in halves, clamp passes on the boundary)


@triton.jit
def _max_share(a, b):  # d max(a, b) / d a
    return (a > b).to(a.dtype) + 0.5 * (a == b).to(a.dtype)


@triton.jit
def _min_share(a, b):  # d min(a, b) / d a
    return (a < b).to(a.dtype) + 0.5 * (a == b).to(a.dtype)


@triton.jit
def _ge(a, b):
    return (a >= b).to(a.dtype)


@triton.jit
def _in_unit(s):  # d clamp(s, -1, 1) / d s
    return ((s >= -1.0) & (s <= 1.0)).to(s.dtype)


@triton.jit
def _guard(d, eps, ADD: tl.constexpr):
    """A denominator guarded as the eager ``_boxes.guard``: ``d + eps`` (ADD: the kinds of
    ``BOX_EPS_ADDED``) or ``max(d, eps)``."""
    if ADD:
        return d + eps
    else:
        return tl.maximum(d, eps)


@triton.jit
def _guard_pass(d, eps, ADD: tl.constexpr):  # d _guard(d) / d d: 1, or 0 below eps
    if ADD:
        return tl.zeros_like(d) + 1.0
    else:
        return _ge(d, eps)


@triton.jit
def _iou_loss(iou, h0, KIND: tl.constexpr):
    """IoU linear / square / log, the IoU clamped below at ``h0``: ``(loss, d iou)``."""
    c = tl.maximum(iou, h0)
    pas = _ge(iou, h0)
    if KIND == _IOU_LINEAR:
        loss = 1.0 - c
        d_iou = -pas
    elif KIND == _IOU_SQUARE:
        loss = 1.0 - c * c
        d_iou = -2.0 * c * pas
    else:
        loss = -tl.log(c)
        d_iou = -pas / c
    return loss, d_iou


@triton.jit
def _giou_loss(iou, uni, cw, ch, eps, ADD: tl.constexpr, GRAD: tl.constexpr):
    """GIoU, ``1 - (iou - (area - union) / area)``, ``area = guard(cw ch)``:
    ``(loss, d iou, d union, d cw, d ch)``."""
    zero = tl.zeros_like(iou)
    area = _guard(cw * ch, eps, ADD)
    loss = 1.0 - (iou - (area - uni) / area)
    d_iou = zero - 1.0
    d_uni = zero
    d_cw = zero
    d_ch = zero
    if GRAD:
        inv = 1.0 / area
        d_area = uni * inv * inv * _guard_pass(cw * ch, eps, ADD)
        d_uni = -inv
        d_cw = d_area * ch
        d_ch = d_area * cw
    return loss, d_iou, d_uni, d_cw, d_ch


@triton.jit
def _centre_loss(iou, pw, ph, tw, th, pwr, phr, twr, thr, cw, ch, dx, dy, rho2, diag, diag_pass, eps,
                 KIND: tl.constexpr, ADD: tl.constexpr, GRAD: tl.constexpr, F64: tl.constexpr):
    """DIoU, CIoU, Efficient-IoU: ``1 - (iou - rho^2 / diag)`` and their terms beyond it, ``diag``
    guarded (``diag_pass``: its guard's derivative):
    ``(loss, d iou, d cw, d ch, d dx, d dy, d pw, d ph, d pwr, d phr)``."""
    zero = tl.zeros_like(iou)
    d_cw = zero
    d_ch = zero
    d_dx = zero
    d_dy = zero
    d_pw = zero
    d_ph = zero
    d_pwr = zero
    d_phr = zero
    pen = rho2 / diag
    d_pen = zero + 1.0
    if KIND == _DIOU:
        loss = 1.0 - (iou - pen)
        d_iou = zero - 1.0
    elif KIND == _CIOU:  # 1 - clamp(iou - (pen + alpha v), -1, 1), alpha without gradient
        hpe = _guard(ph, eps, ADD)
        a = pw / hpe
        da = atan_pos(tw / _guard(th, eps, ADD), F64) - atan_pos(a, F64)
        v = _ASPECT * (da * da)
        den = 1.0 - iou + v
        # no eps (mmdet): 0 where den = 0 (then v = 0), else v / den <= 1
        alpha = tl.where((iou > 0.5) & (den > 0.0), v / den, 0.0)
        score = iou - (pen + alpha * v)
        loss = 1.0 - tl.minimum(tl.maximum(score, -1.0), 1.0)
        d_iou = -_in_unit(score)
        d_pen = -d_iou
        if GRAD:
            k = d_pen * alpha * _ASPECT * 2.0 * da / ((1.0 + a * a) * hpe)
            d_pw = -k
            d_ph = k * a * _guard_pass(ph, eps, ADD)
    else:  # Efficient-IoU: + (w_p - w_t)^2 / guard(C_w^2) + (h_p - h_t)^2 / guard(C_h^2), raw sizes
        cw2 = _guard(cw * cw, eps, ADD)
        ch2 = _guard(ch * ch, eps, ADD)
        dw = pwr - twr
        dh = phr - thr
        tw_ = dw * dw / cw2
        th_ = dh * dh / ch2
        loss = 1.0 - (iou - (pen + tw_ + th_))
        d_iou = zero - 1.0
        if GRAD:
            d_pwr = 2.0 * dw / cw2
            d_phr = 2.0 * dh / ch2
            d_cw = -tw_ * 2.0 * cw / cw2 * _guard_pass(cw * cw, eps, ADD)
            d_ch = -th_ * 2.0 * ch / ch2 * _guard_pass(ch * ch, eps, ADD)
    if GRAD:
        d_dx = d_pen * 2.0 * dx / diag
        d_dy = d_pen * 2.0 * dy / diag
        d_diag = -d_pen * pen / diag * diag_pass
        d_cw += d_diag * 2.0 * cw
        d_ch += d_diag * 2.0 * ch
    return loss, d_iou, d_cw, d_ch, d_dx, d_dy, d_pw, d_ph, d_pwr, d_phr


@triton.jit
def _siou_loss(iou, pw, ph, tw, th, cw, ch, dx, dy, eps, NEG_GAMMA: tl.constexpr, ADD: tl.constexpr,
               GRAD: tl.constexpr, F64: tl.constexpr):
    """SIoU (mmdet), ``1 - clamp(iou - (distance + shape) / 2, -1, 1)``:
    ``(loss, d iou, d cw, d ch, d dx, d dy, d pw, d ph)``."""
    zero = tl.zeros_like(iou)
    d_cw = zero
    d_ch = zero
    d_dx = zero
    d_dy = zero
    d_pw = zero
    d_ph = zero
    sx = dx + eps
    sy = dy + eps
    ss = sx * sx + sy * sy
    den = tl.maximum(ss, _SIOU_OFFSET2_MIN)
    pp = sx * sy
    angle = 2.0 * tl.abs(pp) / den
    if NEG_GAMMA:
        gam = angle - 2.0
    else:
        gam = 2.0 - angle
    cwc = tl.maximum(cw, eps)
    chc = tl.maximum(ch, eps)
    qx = sx / cwc
    qy = sy / chc
    rx = qx * qx
    ry = qy * qy
    # the exponents capped (core/abi.py's SIOU_EXP_MAX): past the cap the loss's clamp saturates
    ax = gam * rx
    ay = gam * ry
    mx = expm1(tl.minimum(ax, _SIOU_EXP_MAX), F64)
    my = expm1(tl.minimum(ay, _SIOU_EXP_MAX), F64)
    distance = -mx - my
    # the larger width clamped at eps (mmdet: no eps), the larger height guarded (mmdet: + eps)
    denw = tl.maximum(tl.maximum(pw, tw), eps)
    denh = _guard(tl.maximum(ph, th), eps, ADD)
    ow = tl.abs(pw - tw) / denw
    oh = tl.abs(ph - th) / denh
    mw = -expm1(-ow, F64)
    mh = -expm1(-oh, F64)
    shape = mw * mw * mw * mw + mh * mh * mh * mh
    score = iou - 0.5 * (distance + shape)
    loss = 1.0 - tl.minimum(tl.maximum(score, -1.0), 1.0)
    d_iou = -_in_unit(score)
    if GRAD:
        d_half = -0.5 * d_iou  # d loss / d distance = d loss / d shape
        ex = mx + 1.0
        ey = my + 1.0
        kx = (ax <= _SIOU_EXP_MAX).to(ax.dtype)
        ky = (ay <= _SIOU_EXP_MAX).to(ay.dtype)
        d_gam = -d_half * (rx * ex * kx + ry * ey * ky)
        d_rx = -d_half * gam * ex * kx
        d_ry = -d_half * gam * ey * ky
        d_sx = d_rx * 2.0 * qx / cwc
        d_sy = d_ry * 2.0 * qy / chc
        d_cw = -d_rx * 2.0 * rx / cwc * _ge(cw, eps)
        d_ch = -d_ry * 2.0 * ry / chc * _ge(ch, eps)
        if NEG_GAMMA:
            d_angle = d_gam
        else:
            d_angle = -d_gam
        d_pp = d_angle * 2.0 / den * sign(pp)
        d_ss = -d_angle * angle / den * _ge(ss, _SIOU_OFFSET2_MIN)
        d_dx = d_sx + d_pp * sy + d_ss * 2.0 * sx
        d_dy = d_sy + d_pp * sx + d_ss * 2.0 * sy
        d_ow = d_half * 4.0 * mw * mw * mw * (1.0 - mw)
        d_oh = d_half * 4.0 * mh * mh * mh * (1.0 - mh)
        d_pw = (d_ow / denw * sign(pw - tw)
                - d_ow * ow / denw * _ge(tl.maximum(pw, tw), eps) * _max_share(pw, tw))
        d_ph = (d_oh / denh * sign(ph - th)
                - d_oh * oh / denh * _guard_pass(tl.maximum(ph, th), eps, ADD) * _max_share(ph, th))
    return loss, d_iou, d_cw, d_ch, d_dx, d_dy, d_pw, d_ph


@triton.jit
def _wiou_loss(iou, dx, dy, rho2, diag, GRAD: tl.constexpr):
    """Wise-IoU v1, ``exp(rho^2 / diag) (1 - iou)``, ``diag`` without gradient: ``(loss, d iou, d dx, d dy)``."""
    zero = tl.zeros_like(iou)
    d_dx = zero
    d_dy = zero
    big_r = tl.exp(rho2 / diag)
    loss = big_r * (1.0 - iou)
    d_iou = -big_r
    if GRAD:
        d_rho2 = big_r * (1.0 - iou) / diag
        d_dx = d_rho2 * 2.0 * dx
        d_dy = d_rho2 * 2.0 * dy
    return loss, d_iou, d_dx, d_dy


@triton.jit
def _extended_iou_loss(px1, py1, tx1, ty1, ix1, iy1, ix2, iy2, pw, ph, tw, th, eps, h0, ADD: tl.constexpr,
                       GRAD: tl.constexpr):
    """mmdet's Extended-IoU: a signed intersection ``inter`` from the intersection's corners ``ix1..iy2``
    and the enclosure's top-left ``(ex1, ey1)``, then smooth L1 (knee ``h0``) of ``1 - inter / union``
    (the union guarded):
    ``(loss, d ix1, d iy1, d ix2, d iy2, d ex1, d ey1, d pw, d ph)``."""
    zero = tl.zeros_like(px1)
    d_ix1 = zero
    d_iy1 = zero
    d_ix2 = zero
    d_iy2 = zero
    d_ex1 = zero
    d_ey1 = zero
    d_pw = zero
    d_ph = zero
    ex1 = tl.minimum(px1, tx1)
    ey1 = tl.minimum(py1, ty1)
    xmin = tl.minimum(ix1, ix2)
    xmax = tl.maximum(ix1, ix2)
    ymin = tl.minimum(iy1, iy2)
    ymax = tl.maximum(iy1, iy2)
    a_ = ix2 - ex1
    b_ = iy2 - ey1
    c_ = xmin - ex1
    d_ = ymin - ey1
    e_ = ix1 - ex1
    f_ = ymax - ey1
    g_ = xmax - ex1
    h_ = iy1 - ey1
    inter = a_ * b_ + c_ * d_ - e_ * f_ - g_ * h_
    unr = pw * ph + tw * th - inter
    uni = _guard(unr, eps, ADD)
    q = inter / uni
    l0 = 1.0 - q
    loss = tl.where(l0 < h0, 0.5 * l0 * l0 / h0, l0 - 0.5 * h0)
    if GRAD:
        d_q = -tl.where(l0 < h0, l0 / h0, 1.0)
        d_uni = -d_q * q / uni * _guard_pass(unr, eps, ADD)  # d loss / d unr
        d_inter = d_q / uni - d_uni
        d_pw = d_uni * ph
        d_ph = d_uni * pw
        d_a = d_inter * b_
        d_b = d_inter * a_
        d_c = d_inter * d_
        d_d = d_inter * c_
        d_e = -d_inter * f_
        d_f = -d_inter * e_
        d_g = -d_inter * h_
        d_h = -d_inter * g_
        d_ex1 = -(d_a + d_c + d_e + d_g)
        d_ey1 = -(d_b + d_d + d_f + d_h)
        d_ix1 = d_e + d_c * _min_share(ix1, ix2) + d_g * _max_share(ix1, ix2)
        d_ix2 = d_a + d_c * _min_share(ix2, ix1) + d_g * _max_share(ix2, ix1)
        d_iy1 = d_h + d_d * _min_share(iy1, iy2) + d_f * _max_share(iy1, iy2)
        d_iy2 = d_b + d_d * _min_share(iy2, iy1) + d_f * _max_share(iy2, iy1)
    return loss, d_ix1, d_iy1, d_ix2, d_iy2, d_ex1, d_ey1, d_pw, d_ph


@triton.jit
def _iou_adjoints(d_iou, d_uni, d_pw, d_ph, iou, uni, uni_pass, pw, ph, iw, ih, iwr, ihr):
    """Through ``iou = inter / union``, ``union = guard(pw ph + tw th - inter)`` (``uni_pass``: the
    guard's derivative), ``inter = iw ih``, ``iw = max(ix2 - ix1, 0)``:
    ``(d pw, d ph, d ix1, d iy1, d ix2, d iy2)`` (with the given ``d pw``, ``d ph`` of the other terms)."""
    d_u = (d_uni - d_iou * iou / uni) * uni_pass
    d_inter = d_iou / uni - d_u
    d_iwr = d_inter * ih * _ge(iwr, 0.0)
    d_ihr = d_inter * iw * _ge(ihr, 0.0)
    return d_pw + d_u * ph, d_ph + d_u * pw, -d_iwr, -d_ihr, d_iwr, d_ihr


@triton.jit
def _box_grad(px1, py1, px2, py2, tx1, ty1, tx2, ty2, pwr, phr, cwr, chr_, d_ix1, d_iy1, d_ix2, d_iy2, d_ex1,
              d_ey1, d_pw, d_ph, d_pwr, d_phr, d_dx, d_dy, d_cw, d_ch):
    """The chain rule from the adjoints of the geometry to the 4 pred coordinates: the intersection's
    corners ``ix1 = max(px1, tx1)``, ``ix2 = min(px2, tx2)``; the enclosure's top-left
    ``ex1 = min(px1, tx1)``; the clamped and raw pred sizes ``pw = max(pwr, 0)``, ``pwr = px2 - px1``;
    the centre offset ``dx = (tx1 - px1 + tx2 - px2) / 2``; the enclosure's size
    ``cw = max(cwr, 0)``, ``cwr = max(px2, tx2) - min(px1, tx1)``. Returns ``(d/dx1, d/dy1, d/dx2, d/dy2)``."""
    d_pwr += d_pw * _ge(pwr, 0.0)
    d_phr += d_ph * _ge(phr, 0.0)
    d_cwr = d_cw * _ge(cwr, 0.0)
    d_chr = d_ch * _ge(chr_, 0.0)
    g0 = (d_ix1 * _max_share(px1, tx1) + d_ex1 * _min_share(px1, tx1) - d_pwr - 0.5 * d_dx
          - d_cwr * _min_share(px1, tx1))
    g1 = (d_iy1 * _max_share(py1, ty1) + d_ey1 * _min_share(py1, ty1) - d_phr - 0.5 * d_dy
          - d_chr * _min_share(py1, ty1))
    g2 = d_ix2 * _min_share(px2, tx2) + d_pwr - 0.5 * d_dx + d_cwr * _max_share(px2, tx2)
    g3 = d_iy2 * _min_share(py2, ty2) + d_phr - 0.5 * d_dy + d_chr * _max_share(py2, ty2)
    return g0, g1, g2, g3


@triton.jit
def _box_eval(px1, py1, px2, py2, tx1, ty1, tx2, ty2, eps, h0, KIND: tl.constexpr, GRAD: tl.constexpr,
              FLAG: tl.constexpr, ADD: tl.constexpr, F64: tl.constexpr):
    """``(loss, d/dx1, d/dy1, d/dx2, d/dy2)`` of pred boxes against target boxes (zeros if not GRAD):
    the shared geometry, the kind's loss and adjoints (a helper per kind or group), the chain rule.
    ``ADD``: the kind's denominators add ``eps`` rather than clamp at it (:func:`_guard`)."""
    zero = tl.zeros_like(px1)
    pwr = px2 - px1
    phr = py2 - py1
    twr = tx2 - tx1
    thr = ty2 - ty1
    pw = tl.maximum(pwr, 0.0)
    ph = tl.maximum(phr, 0.0)
    tw = tl.maximum(twr, 0.0)
    th = tl.maximum(thr, 0.0)
    ix1 = tl.maximum(px1, tx1)  # the intersection's corners
    iy1 = tl.maximum(py1, ty1)
    ix2 = tl.minimum(px2, tx2)
    iy2 = tl.minimum(py2, ty2)
    # the adjoints (d loss / d ...) a kind does not set
    d_pw = zero
    d_ph = zero
    d_pwr = zero
    d_phr = zero
    d_dx = zero
    d_dy = zero
    d_cw = zero
    d_ch = zero
    d_ex1 = zero
    d_ey1 = zero
    cwr = zero
    chr_ = zero
    if KIND == _EXTENDED_IOU:  # a signed intersection of its own; no enclosure size, no centre
        loss, d_ix1, d_iy1, d_ix2, d_iy2, d_ex1, d_ey1, d_pw, d_ph = _extended_iou_loss(
            px1, py1, tx1, ty1, ix1, iy1, ix2, iy2, pw, ph, tw, th, eps, h0, ADD, GRAD)
    else:
        iwr = ix2 - ix1
        ihr = iy2 - iy1
        iw = tl.maximum(iwr, 0.0)
        ih = tl.maximum(ihr, 0.0)
        inter = iw * ih
        unr = pw * ph + tw * th - inter
        uni = _guard(unr, eps, ADD)
        iou = inter / uni
        cwr = tl.maximum(px2, tx2) - tl.minimum(px1, tx1)
        chr_ = tl.maximum(py2, ty2) - tl.minimum(py1, ty1)
        cw = tl.maximum(cwr, 0.0)
        ch = tl.maximum(chr_, 0.0)
        dx = ((tx1 - px1) + (tx2 - px2)) * 0.5
        dy = ((ty1 - py1) + (ty2 - py2)) * 0.5
        rho2 = dx * dx + dy * dy
        dgr = cw * cw + ch * ch
        diag = _guard(dgr, eps, ADD)
        d_uni = zero
        if KIND == _IOU_LINEAR or KIND == _IOU_SQUARE or KIND == _IOU_LOG:
            loss, d_iou = _iou_loss(iou, h0, KIND)
        elif KIND == _GIOU:
            loss, d_iou, d_uni, d_cw, d_ch = _giou_loss(iou, uni, cw, ch, eps, ADD, GRAD)
        elif KIND == _DIOU or KIND == _CIOU or KIND == _EFFICIENT_IOU:
            loss, d_iou, d_cw, d_ch, d_dx, d_dy, d_pw, d_ph, d_pwr, d_phr = _centre_loss(
                iou, pw, ph, tw, th, pwr, phr, twr, thr, cw, ch, dx, dy, rho2, diag, _guard_pass(dgr, eps, ADD), eps,
                KIND, ADD, GRAD, F64)
        elif KIND == _SIOU:
            loss, d_iou, d_cw, d_ch, d_dx, d_dy, d_pw, d_ph = _siou_loss(
                iou, pw, ph, tw, th, cw, ch, dx, dy, eps, FLAG, ADD, GRAD, F64)
        else:  # Wise-IoU v1 (the host checked the kind)
            loss, d_iou, d_dx, d_dy = _wiou_loss(iou, dx, dy, rho2, diag, GRAD)
        if GRAD:
            d_pw, d_ph, d_ix1, d_iy1, d_ix2, d_iy2 = _iou_adjoints(
                d_iou, d_uni, d_pw, d_ph, iou, uni, _guard_pass(unr, eps, ADD), pw, ph, iw, ih, iwr, ihr)
    if GRAD:
        g0, g1, g2, g3 = _box_grad(px1, py1, px2, py2, tx1, ty1, tx2, ty2, pwr, phr, cwr, chr_, d_ix1, d_iy1, d_ix2,
                                   d_iy2, d_ex1, d_ey1, d_pw, d_ph, d_pwr, d_phr, d_dx, d_dy, d_cw, d_ch)
    else:
        g0 = zero
        g1 = zero
        g2 = zero
        g3 = zero
    return loss, g0, g1, g2, g3


@triton.jit
def _box_kernel(p_ptr, t_ptr, w_ptr, hp_ptr, scale_ptr, gout_ptr, out_ptr, n,
                KIND: tl.constexpr, GRAD: tl.constexpr, FLAG: tl.constexpr, ADD: tl.constexpr, HAS_W: tl.constexpr,
                HAS_GOUT: tl.constexpr, OUT_ELEM: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr,
                BLOCK: tl.constexpr):
    """Forward: the weighted loss per box (OUT_ELEM) or per-program partial sums; backward:
    d pred = scale * w * gout * d loss / d pred, (N, 4)."""
    pid, i, mask = program_block(n, I64, BLOCK)
    px1 = tl.load(p_ptr + 4 * i, mask=mask, other=0.0)
    py1 = tl.load(p_ptr + 4 * i + 1, mask=mask, other=0.0)
    px2 = tl.load(p_ptr + 4 * i + 2, mask=mask, other=1.0)
    py2 = tl.load(p_ptr + 4 * i + 3, mask=mask, other=1.0)
    tx1 = tl.load(t_ptr + 4 * i, mask=mask, other=0.0)
    ty1 = tl.load(t_ptr + 4 * i + 1, mask=mask, other=0.0)
    tx2 = tl.load(t_ptr + 4 * i + 2, mask=mask, other=1.0)
    ty2 = tl.load(t_ptr + 4 * i + 3, mask=mask, other=1.0)
    eps = tl.load(hp_ptr)
    h0 = tl.load(hp_ptr + 1)
    loss, g0, g1, g2, g3 = _box_eval(px1, py1, px2, py2, tx1, ty1, tx2, ty2, eps, h0, KIND, GRAD, FLAG, ADD, F64)
    if GRAD:
        f = weigh(tl.zeros_like(px1) + 1.0, i, i, mask, w_ptr, w_ptr, HAS_W, False)
        f = times_upstream(f, i, i, mask, scale_ptr, gout_ptr, gout_ptr, False, HAS_GOUT)
        tl.store(out_ptr + 4 * i, g0 * f, mask=mask)
        tl.store(out_ptr + 4 * i + 1, g1 * f, mask=mask)
        tl.store(out_ptr + 4 * i + 2, g2 * f, mask=mask)
        tl.store(out_ptr + 4 * i + 3, g3 * f, mask=mask)
    else:
        epilogue(loss, i, i, mask, pid, w_ptr, w_ptr, scale_ptr, gout_ptr, gout_ptr, out_ptr, HAS_W, False, False,
                 False, False, OUT_ELEM)


# ---------------------------------------------------------------------------------------------
# host side


def _box_config(kind: int, eps: float, hp: Sequence[float]):
    """``(KIND, [eps, h0] for the kernel, FLAG, ADD)`` of a box kind: the kernel reads its one
    hyper-parameter as ``h0`` (the IoU floor, Extended-IoU's smooth point), except SIoU's
    ``neg_gamma``, which is the compile-time FLAG; ADD: whether the kind adds ``eps`` to its
    denominators (:data:`~mmloss_ext.core.abi.BOX_EPS_ADDED`) rather than clamping them at it."""
    kind = member(BoxKind, kind)
    hp = floats(f'BoxKind.{kind.name}', BOX_HP[kind], hp)
    added = kind in BOX_EPS_ADDED
    if kind == BoxKind.SIOU:
        return int(kind), [float(eps), 0.0], hp[0] != 0.0, added
    return int(kind), [float(eps), hp[0] if hp else 0.0], False, added


def box_forward(kind: int, eps: float, hp: List[float], pred: Tensor, target: Tensor,
                w: Optional[Tensor], out_mode: int) -> Tensor:
    """out_mode (:class:`OutMode`) TOTAL: the weighted total (float64, 0-d); ELEMENTS: the weighted
    loss per box (N,)."""
    check('boxes', pred, target, w)
    out_mode = out_mode_of(out_mode)
    kind, vals, flag, added = _box_config(kind, eps, hp)
    n = pred.shape[0]
    grid = (triton.cdiv(n, _BLOCK_BOX),)
    out = torch.empty(n, dtype=pred.dtype, device=pred.device) if out_mode == OutMode.ELEMENTS else \
        torch.empty(grid[0], dtype=torch.float64, device=pred.device)
    if n > 0:
        _box_kernel[grid](pred, target, opt(w, pred), const(vals, pred.dtype, pred.device), pred, pred, out, n,
                          KIND=kind, GRAD=False, FLAG=flag, ADD=added, HAS_W=w is not None, HAS_GOUT=False,
                          OUT_ELEM=out_mode == OutMode.ELEMENTS, F64=pred.dtype == torch.float64,
                          I64=needs_int64(4 * n, 4 * _BLOCK_BOX), BLOCK=_BLOCK_BOX)
    return out if out_mode == OutMode.ELEMENTS else out.sum(dtype=torch.float64)


def box_backward(kind: int, eps: float, hp: List[float], pred: Tensor, target: Tensor,
                 w: Optional[Tensor], scale: Union[float, Tensor], per_box: Optional[Tensor]) -> Tensor:
    """d pred (N, 4) = scale * w[i] * per_box[i] * d loss_i / d pred_i."""
    check('boxes', pred, target, w, per_box)
    kind, vals, flag, added = _box_config(kind, eps, hp)
    n = pred.shape[0]
    dp = torch.empty_like(pred)
    if n > 0:
        _box_kernel[(triton.cdiv(n, _BLOCK_BOX),)](
            pred, target, opt(w, pred), const(vals, pred.dtype, pred.device),
            scale_tensor(scale, pred.dtype, pred.device), opt(per_box, pred), dp, n, KIND=kind, GRAD=True, FLAG=flag, ADD=added, HAS_W=w is not None,
            HAS_GOUT=per_box is not None, OUT_ELEM=True, F64=pred.dtype == torch.float64,
            I64=needs_int64(4 * n, 4 * _BLOCK_BOX), BLOCK=_BLOCK_BOX)
    return dp
