"""What every Triton kernel of :mod:`mmloss_ext.kernels` shares: math helpers, the epilogue that
weights, scales and stores a result, and the host side's small tensors and checks.

Every operation's Triton module (``kernels/<op>/<op>_triton.py``) takes and returns what the C++
extension's functions of the same names do, so that the operators of :mod:`.operators` run either
backend. Conventions:

* one program per ``BLOCK`` elements (boxes) of the flat input; float32 inputs compute in float32,
  float64 in float64 (hyper-parameters travel in a small tensor of that dtype, :func:`const`:
  Triton passes Python floats as float32);
* totals (``OutMode.TOTAL``) are per-program partial sums in float64, added up by ``torch.sum``
  (deterministic, no atomics): :func:`epilogue`;
* ``log1p``/``expm1``/``atan`` are series written here in ``tl`` primitives (libdevice has them on
  CUDA but not in Triton's CPU interpreter, which the tests run under ``TRITON_INTERPRET=1``).

Import the Triton modules lazily (``TRITON_INTERPRET`` is read when the kernels are decorated).
"""
from __future__ import annotations

import math
from enum import IntEnum
from typing import List, Optional, Sequence, Type, Union

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..core.abi import OutMode

_HALF_PI = tl.constexpr(math.pi / 2)
_QUARTER_PI = tl.constexpr(math.pi / 4)

# ---------------------------------------------------------------------------------------------
# math helpers (float32 or float64 by F64; every constant is promoted to the operand's dtype)


@triton.jit
def log1p_pos(u, F64: tl.constexpr):
    """log(1 + u) for u >= 0: 2 atanh(s), s = u / (2 + u), as a series below u = 0.5, log above.

    (The series are unrolled with literal coefficients: under the interpreter, arithmetic on a
    ``static_range`` index makes int tensors, and the coefficients would round through float32.)
    """
    s = u / (u + 2.0)
    z = s * s
    if F64:  # sum_k z^k / (2k + 1), k <= 11: < 1e-17 for s <= 0.2
        poly = z * (1.0 / 23.0) + (1.0 / 21.0)
        poly = poly * z + (1.0 / 19.0)
        poly = poly * z + (1.0 / 17.0)
        poly = poly * z + (1.0 / 15.0)
        poly = poly * z + (1.0 / 13.0)
        poly = poly * z + (1.0 / 11.0)
    else:  # k <= 5: < 1e-9 (the shared low-order terms below)
        poly = tl.zeros_like(z) + (1.0 / 11.0)
    poly = poly * z + (1.0 / 9.0)
    poly = poly * z + (1.0 / 7.0)
    poly = poly * z + (1.0 / 5.0)
    poly = poly * z + (1.0 / 3.0)
    poly = poly * z + (1.0 / 1.0)
    small = 2.0 * s * poly
    big = tl.log(tl.maximum(u, 0.5) + 1.0)
    return tl.where(u < 0.5, small, big)


@triton.jit
def expm1(y, F64: tl.constexpr):
    """exp(y) - 1: Taylor series for |y| < 0.5, else exp(y) - 1."""
    ys = tl.minimum(tl.maximum(y, -0.5), 0.5)
    if F64:  # 15 terms: < 1e-17
        acc = ys * (1.0 / 15.0) + 1.0
        acc = acc * ys * (1.0 / 14.0) + 1.0
        acc = acc * ys * (1.0 / 13.0) + 1.0
        acc = acc * ys * (1.0 / 12.0) + 1.0
        acc = acc * ys * (1.0 / 11.0) + 1.0
        acc = acc * ys * (1.0 / 10.0) + 1.0
    else:  # 9 terms (the shared low-order terms below)
        acc = tl.zeros_like(ys) + 1.0
    acc = acc * ys * (1.0 / 9.0) + 1.0
    acc = acc * ys * (1.0 / 8.0) + 1.0
    acc = acc * ys * (1.0 / 7.0) + 1.0
    acc = acc * ys * (1.0 / 6.0) + 1.0
    acc = acc * ys * (1.0 / 5.0) + 1.0
    acc = acc * ys * (1.0 / 4.0) + 1.0
    acc = acc * ys * (1.0 / 3.0) + 1.0
    acc = acc * ys * (1.0 / 2.0) + 1.0
    return tl.where(tl.abs(y) < 0.5, ys * acc, tl.exp(y) - 1.0)


@triton.jit
def atan_pos(z, F64: tl.constexpr):
    """atan(z) for z >= 0: reduced to |u| <= tan(pi/8), then the alternating series."""
    big = z > 1.0
    w = tl.where(big, 1.0 / tl.maximum(z, 1.0), z)
    mid = w > 0.41421356237309503
    u = tl.where(mid, (w - 1.0) / (w + 1.0), w)
    u2 = u * u
    if F64:  # sum_k (-u2)^k / (2k + 1), k <= 21: < 1e-17
        poly = u2 * (-1.0 / 43.0) + (1.0 / 41.0)
        poly = poly * u2 + (-1.0 / 39.0)
        poly = poly * u2 + (1.0 / 37.0)
        poly = poly * u2 + (-1.0 / 35.0)
        poly = poly * u2 + (1.0 / 33.0)
        poly = poly * u2 + (-1.0 / 31.0)
        poly = poly * u2 + (1.0 / 29.0)
        poly = poly * u2 + (-1.0 / 27.0)
        poly = poly * u2 + (1.0 / 25.0)
        poly = poly * u2 + (-1.0 / 23.0)
        poly = poly * u2 + (1.0 / 21.0)
        poly = poly * u2 + (-1.0 / 19.0)
    else:  # k <= 9: < 1e-8 (the shared low-order terms below)
        poly = tl.zeros_like(u2) + (-1.0 / 19.0)
    poly = poly * u2 + (1.0 / 17.0)
    poly = poly * u2 + (-1.0 / 15.0)
    poly = poly * u2 + (1.0 / 13.0)
    poly = poly * u2 + (-1.0 / 11.0)
    poly = poly * u2 + (1.0 / 9.0)
    poly = poly * u2 + (-1.0 / 7.0)
    poly = poly * u2 + (1.0 / 5.0)
    poly = poly * u2 + (-1.0 / 3.0)
    poly = poly * u2 + (1.0 / 1.0)
    a = u * poly
    a = tl.where(mid, a + _QUARTER_PI, a)
    return tl.where(big, _HALF_PI - a, a)


@triton.jit
def sign(d):
    return (d > 0).to(d.dtype) - (d < 0).to(d.dtype)



@triton.jit
def pow_slope(q, g, K: tl.constexpr):
    """``(q^g, g q^(g - 1))``; K: the whole exponent 0..4 (multiplications, ``0^0 = 1``), or -1 for
    any other g: ``exp(g log q)`` for q > 0, 0 at q = 0 (slope 0), NaN below (:func:`pow_code`)."""
    if K == 0:
        value = tl.zeros_like(q) + 1.0
        slope = tl.zeros_like(q)
    elif K == 1:
        value = q
        slope = tl.zeros_like(q) + 1.0
    elif K == 2:
        value = q * q
        slope = 2.0 * q
    elif K == 3:
        q2 = q * q
        value = q2 * q
        slope = 3.0 * q2
    elif K == 4:
        q2 = q * q
        value = q2 * q2
        slope = 4.0 * q2 * q
    else:
        pos = q > 0
        lq = tl.log(tl.where(pos, q, 1.0))
        below = tl.log(tl.where(q < 0, q, 1.0))  # NaN where q < 0 (0 elsewhere, unused)
        value = tl.where(pos, tl.exp(g * lq), tl.where(q < 0, below, 0.0))
        slope = tl.where(pos, g * tl.exp((g - 1.0) * lq), tl.where(q < 0, below, 0.0))
    return value, slope


# ---------------------------------------------------------------------------------------------
# the program's block, and the epilogue: weights, the upstream gradient, the store


@triton.jit
def program_block(n, I64: tl.constexpr, BLOCK: tl.constexpr):
    """``(pid, offs, mask)``: this program's index, the ``BLOCK`` indices it covers (int64 offsets
    when I64: more than 2**31 elements) and which of them are below ``n``."""
    pid = tl.program_id(0)
    if I64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    return pid, offs, offs < n


@triton.jit
def weigh(v, offs, row, mask, wrow_ptr, wfull_ptr, HAS_WROW: tl.constexpr, HAS_WFULL: tl.constexpr):
    """``v`` times the elementwise weight ``wfull[offs]`` and the per-row ``wrow[row]`` (each when given)."""
    if HAS_WFULL:
        v = v * tl.load(wfull_ptr + offs, mask=mask, other=0.0)
    if HAS_WROW:
        v = v * tl.load(wrow_ptr + row, mask=mask, other=0.0)
    return v


@triton.jit
def times_upstream(v, offs, row, mask, scale_ptr, grow_ptr, gfull_ptr, HAS_GROW: tl.constexpr, HAS_GFULL: tl.constexpr):
    """``v`` times the upstream gradient: its scale, per row ``grow[row]`` and per element ``gfull[offs]``."""
    v = v * tl.load(scale_ptr)
    if HAS_GROW:
        v = v * tl.load(grow_ptr + row, mask=mask, other=0.0)
    if HAS_GFULL:
        v = v * tl.load(gfull_ptr + offs, mask=mask, other=0.0)
    return v


@triton.jit
def epilogue(v, offs, row, mask, pid, wrow_ptr, wfull_ptr, scale_ptr, grow_ptr, gfull_ptr, out_ptr,
              HAS_WROW: tl.constexpr, HAS_WFULL: tl.constexpr, GRAD: tl.constexpr, HAS_GROW: tl.constexpr,
              HAS_GFULL: tl.constexpr, OUT_ELEM: tl.constexpr):
    """The end of every kernel with one value per element: ``v`` weighted (:func:`weigh`); the
    backward (GRAD) multiplies the upstream gradient in (:func:`times_upstream`) and stores per element;
    the forward stores per element (OUT_ELEM) or the program's float64 partial sum at ``out[pid]``."""
    v = weigh(v, offs, row, mask, wrow_ptr, wfull_ptr, HAS_WROW, HAS_WFULL)
    if GRAD:
        tl.store(out_ptr + offs, times_upstream(v, offs, row, mask, scale_ptr, grow_ptr, gfull_ptr, HAS_GROW, HAS_GFULL),
                 mask=mask)
    elif OUT_ELEM:
        tl.store(out_ptr + offs, v, mask=mask)
    else:
        tl.store(out_ptr + pid, tl.sum(tl.where(mask, v, 0.0).to(tl.float64), axis=0))


# ---------------------------------------------------------------------------------------------
# host side

_HP_CACHE: dict = {}


def const(values: Sequence[float], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small constant tensor, cached (no host-to-device copy per call)."""
    key = (tuple(float(v) for v in values), dtype, device)
    t = _HP_CACHE.get(key)
    if t is None:
        if len(_HP_CACHE) > 512:
            _HP_CACHE.clear()
        t = _HP_CACHE[key] = torch.tensor(key[0], dtype=dtype, device=device)
    return t


def scale_tensor(scale: Union[float, Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
    """The upstream scale as a 1-element tensor (a 0-d CUDA tensor stays on the device: no sync)."""
    if isinstance(scale, Tensor):
        return scale.detach().reshape(1).to(dtype)
    return torch.full((1,), float(scale), dtype=dtype, device=device)


def pow_code(g: float) -> int:
    """The exponent code of :func:`pow_slope`: ``g`` itself when whole in [0, 4], else -1."""
    return int(g) if g in (0.0, 1.0, 2.0, 3.0, 4.0) else -1


def member(enum_cls: Type[IntEnum], kind: int) -> IntEnum:
    """``kind`` as a member of ``enum_cls`` (:class:`~mmloss_ext.core.abi.ElementwiseKind`, ...)."""
    if isinstance(kind, int) and not isinstance(kind, bool) and kind in enum_cls.__members__.values():
        return enum_cls(kind)
    raise ValueError(f'mmloss_ext fused (triton): unknown {enum_cls.__name__} {kind!r}; the ids are '
                     f'{", ".join(f"{int(k)} ({k.name})" for k in enum_cls)}')


def floats(what: str, names: Sequence[str], hp: Sequence[float]) -> List[float]:
    """``hp`` as floats, checked against the hyper-parameter ``names`` of ``what``."""
    if len(hp) != len(names):
        raise ValueError(f'mmloss_ext fused (triton): {what} takes {len(names)} hyper-parameters {list(names)}, '
                         f'got {len(hp)}')
    return [float(h) for h in hp]


def out_mode_of(out_mode: int, rows: bool = False) -> OutMode:
    """``out_mode`` checked: :class:`OutMode`, ``ROWS`` only where ``rows``."""
    modes = tuple(OutMode) if rows else (OutMode.TOTAL, OutMode.ELEMENTS)
    if not isinstance(out_mode, int) or out_mode not in modes:
        shown = int(out_mode) if isinstance(out_mode, int) else repr(out_mode)
        raise ValueError(f'mmloss_ext fused (triton): out_mode {shown} is not one of '
                         f'{", ".join(f"{int(m)} ({m.name})" for m in modes)}')
    return OutMode(out_mode)


def opt(t: Optional[Tensor], fallback: Tensor) -> Tensor:
    """``t``, or ``fallback`` for an absent argument (the kernel does not read it)."""
    return fallback if t is None else t


def check(op: str, x: Tensor, *others: Optional[Tensor], min_dim: int = 1) -> None:
    """``x`` contiguous, of at least ``min_dim`` dimensions; the ``others`` contiguous, on its
    device, of its dtype (or int64)."""
    if not x.is_contiguous() or x.dim() < min_dim:
        raise ValueError(f'mmloss_ext fused {op} (triton): pred must be contiguous, of at least {min_dim} '
                         'dimensions')
    for t in others:
        if t is not None and (t.device != x.device or not t.is_contiguous()
                              or (t.dtype != torch.long and t.dtype != x.dtype)):
            raise ValueError(f"mmloss_ext fused {op} (triton): inputs must be contiguous, on pred's device, "
                             'of its dtype')


def needs_int64(numel: int, block: int) -> bool:
    """Whether the offsets of ``numel`` elements, ``block`` per program, overflow int32."""
    return numel + block >= 2 ** 31
