"""The fused kernels' interface, written once: kernel ids, hyper-parameters, output modes, the
numeric constants the kernels share with the eager losses, and the interface version.

Every other copy is derived from this module:

* ``setup.py`` passes :func:`cpp_macros` to the compiler; ``kernels/cpp/abi.h`` makes the C++
  enums and constants of them, and the built extension reports what it was built with as
  ``_fused.abi`` and ``_fused.interface``;
* :mod:`mmloss_ext.kernels.backends` compares those with :data:`ABI` and :func:`interface` when
  it loads the extension: a build from another version of this module is stale and is not used;
* the Triton kernels (``kernels/<op>/<op>_triton.py``) and the entry points of the operations
  (``kernels/<op>/__init__.py``) import the enums, layouts and constants from here;
* the eager losses import the constants they share with the kernels.

Standard library only: ``setup.py`` loads this file by its path, before torch or the package
can be imported.

Example:
    >>> BoxKind.GIOU == 3, box_kind('giou') is BoxKind.GIOU, len(BOX_HP[BoxKind.SIOU])
    (True, True, 1)
"""
from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Dict, FrozenSet, List, Mapping, Tuple, Union

__all__ = ['ABI', 'ElementwiseKind', 'BoxKind', 'OutMode', 'ELEMENTWISE_HP', 'BOX_HP', 'BOX_EPS_ADDED', 'DICE_HP',
           'GAUSSIAN_FOCAL_HP', 'SMOOTH_L1_MIN_BETA', 'SIOU_EXP_MAX', 'SIOU_OFFSET2_MIN', 'DICE_DENOMINATOR_MIN',
           'GAUSSIAN_FOCAL_EPS', 'box_kind', 'pack', 'interface', 'cpp_macros']

#: the interface version of the compiled kernels, bumped whenever a kernel's signature, an id or
#: the meaning of a constant changes
ABI = 7


@enum.unique
class ElementwiseKind(enum.IntEnum):
    """The kernels of the elementwise driver: one loss per element of ``pred`` (N, K), against a
    dense target or labels. Their hyper-parameters are :data:`ELEMENTWISE_HP`."""

    FOCAL = 0
    QUALITY_FOCAL = 1
    VARIFOCAL = 2
    SMOOTH_L1 = 3  # also L1: beta below SMOOTH_L1_MIN_BETA
    BALANCED_L1 = 4


@enum.unique
class BoxKind(enum.IntEnum):
    """The kernels of the box driver: one loss per pair of ``x1y1x2y2`` boxes. The family entry
    points of :mod:`mmloss_ext.kernels.boxes` name a kind by its lower-case member name
    (``'giou'``, see :func:`box_kind`). Their hyper-parameters are :data:`BOX_HP`."""

    IOU_LINEAR = 0  # 1 - IoU
    IOU_SQUARE = 1  # 1 - IoU^2
    IOU_LOG = 2  # -log(IoU)
    GIOU = 3
    DIOU = 4
    CIOU = 5
    EXTENDED_IOU = 6  # mmdet's eiou_loss: smooth L1 of 1 - (signed intersection) / union
    SIOU = 7
    EFFICIENT_IOU = 8
    WIOU = 9  # Wise-IoU v1


@enum.unique
class OutMode(enum.IntEnum):
    """What a forward kernel returns (its ``out_mode`` argument)."""

    TOTAL = 0  # the weighted total, a float64 scalar
    ELEMENTS = 1  # the weighted loss of each element (each box), in pred's shape
    ROWS = 2  # the weighted loss summed over each row, (N,); elementwise kernels only


#: the hyper-parameters ``hp`` each elementwise kind takes, in the order of the list
ELEMENTWISE_HP: Mapping[ElementwiseKind, Tuple[str, ...]] = MappingProxyType({
    ElementwiseKind.FOCAL: ('alpha', 'gamma'),
    ElementwiseKind.QUALITY_FOCAL: ('beta',),
    ElementwiseKind.VARIFOCAL: ('alpha', 'gamma', 'iou_weighted'),  # iou_weighted: 0.0 or 1.0
    ElementwiseKind.SMOOTH_L1: ('beta',),
    ElementwiseKind.BALANCED_L1: ('alpha', 'gamma', 'beta'),
})

#: the hyper-parameters ``hp`` each box kind takes besides ``eps``, in the order of the list:
#: the IoU's lower clamp ``floor`` (mmdet's ``eps`` of ``iou_loss``), Extended-IoU's
#: ``smooth_point``, SIoU's ``neg_gamma`` (0.0: mmdet's ``gamma = 2 - angle``, 1.0: the paper's
#: ``angle - 2``)
BOX_HP: Mapping[BoxKind, Tuple[str, ...]] = MappingProxyType({
    BoxKind.IOU_LINEAR: ('floor',),
    BoxKind.IOU_SQUARE: ('floor',),
    BoxKind.IOU_LOG: ('floor',),
    BoxKind.GIOU: (),
    BoxKind.DIOU: (),
    BoxKind.CIOU: (),
    BoxKind.EXTENDED_IOU: ('smooth_point',),
    BoxKind.SIOU: ('neg_gamma',),
    BoxKind.EFFICIENT_IOU: (),
    BoxKind.WIOU: (),
})

#: the box kinds whose denominators add ``eps`` (``d + eps``), as mmdet's own code of those losses
#: does (DIoU, CIoU, SIoU, Extended-IoU); every other kind guards a denominator ``d`` as mmdet's
#: ``bbox_overlaps`` guards the union, ``max(d, eps)`` (the rule: :mod:`mmloss_ext.losses._boxes`)
BOX_EPS_ADDED: FrozenSet[BoxKind] = frozenset({BoxKind.DIOU, BoxKind.CIOU, BoxKind.SIOU, BoxKind.EXTENDED_IOU})

#: the hyper-parameter list ``h`` of the binary Dice kernel (``dice_forward`` / ``dice_backward``), in
#: its order: ``sigmoid`` (1.0: ``pred`` are logits), ``naive`` (1.0: the denominator sums ``p + t``
#: and ``eps`` is added once, to both numerator and denominator), ``eps``, ``has_ignore`` (1.0: the
#: targets equal to ``ignore_index`` are left out)
DICE_HP: Tuple[str, ...] = ('sigmoid', 'naive', 'eps', 'has_ignore', 'ignore_index')

#: the hyper-parameter list ``hp`` of the Gaussian focal kernel (``heatmap_forward`` /
#: ``heatmap_backward``), in its order; ``pos_weight`` 0.0 switches the positive term off
GAUSSIAN_FOCAL_HP: Tuple[str, ...] = ('alpha', 'gamma', 'pos_weight', 'neg_weight')

#: the fixed hyper-parameter layouts by their :func:`interface` key
_LAYOUTS = {'DiceHp': DICE_HP, 'GaussianFocalHp': GAUSSIAN_FOCAL_HP}

#: smooth L1 with ``beta`` below this is computed as plain L1, ``|d|``: the quadratic branch
#: ``0.5 d^2 / beta`` would divide by ~0, and its ``inf``, even where ``torch.where`` does not
#: select it, reaches the gradient as ``0 * inf = nan``
SMOOTH_L1_MIN_BETA = 1e-5

#: the cap of SIoU's distance-cost exponents ``gamma * rho``: beyond it (an inverted box far
#: outside a tiny enclosure) the penalty is below -1e21 and the loss's clamp saturates anyway;
#: uncapped, ``expm1`` overflows and the clamp's zero gradient times ``inf`` is ``nan``
SIOU_EXP_MAX = 50.0

#: the floor of SIoU's squared centre offset ``sx^2 + sy^2`` under its angle cost
#: ``2 |sx sy| / (sx^2 + sy^2)`` (at most 1): float32's smallest normal number, so the cost is
#: mmdet's wherever mmdet's is finite (a non-zero offset) and finite, with a finite gradient, at 0
SIOU_OFFSET2_MIN = 2.0 ** -126

#: the floor of the binary Dice denominator, eager and fused
DICE_DENOMINATOR_MIN = 1e-12

#: added inside both logs of the Gaussian focal loss, ``log(p + eps)`` and ``log(1 - p + eps)``,
#: as mmdet's ``gaussian_focal_loss`` (a probability of exactly 0 or 1 gives a finite loss)
GAUSSIAN_FOCAL_EPS = 1e-12

#: the float constants above, by name (what :func:`interface` and :func:`cpp_macros` report)
_FLOATS = ('SMOOTH_L1_MIN_BETA', 'SIOU_EXP_MAX', 'SIOU_OFFSET2_MIN', 'DICE_DENOMINATOR_MIN', 'GAUSSIAN_FOCAL_EPS')


def box_kind(name: Union[str, BoxKind]) -> BoxKind:
    """The :class:`BoxKind` named ``name``, its lower-case member name (``'giou'``, ``'iou_log'``)."""
    if isinstance(name, BoxKind):
        return name
    if isinstance(name, str) and name == name.lower() and name.upper() in BoxKind.__members__:
        return BoxKind[name.upper()]
    raise ValueError(f'unknown box kind {name!r}; expected one of '
                     f'{", ".join(repr(k.name.lower()) for k in BoxKind)}')


def pack(layout: Tuple[str, ...], **values: float) -> List[float]:
    """The hyper-parameter list of a kernel whose ``layout`` (:data:`DICE_HP`, an entry of
    :data:`BOX_HP`, ...) names its values in order, from the values by name (bools as 0.0 / 1.0).

    Example:
        >>> pack(GAUSSIAN_FOCAL_HP, gamma=4.0, alpha=2.0, neg_weight=1.0, pos_weight=1.0)
        [2.0, 4.0, 1.0, 1.0]
        >>> pack(('beta',), beta=1.0, gamma=2.0)
        Traceback (most recent call last):
        ...
        ValueError: hyper-parameters ('beta',): unexpected gamma
    """
    missing = [name for name in layout if name not in values]
    extra = [name for name in values if name not in layout]
    if missing or extra:
        said = ([f'missing {", ".join(missing)}'] if missing else []) + (
            [f'unexpected {", ".join(extra)}'] if extra else [])
        raise ValueError(f'hyper-parameters {layout}: {"; ".join(said)}')
    return [float(values[name]) for name in layout]


def _check() -> None:
    """Ids 0..n-1 (the C++ range checks and switch tables rely on it); a hyper-parameter list for
    every kind; distinct names in the fixed layouts, none of them ``size`` (the count's macro)."""
    for enum_cls, hp in ((ElementwiseKind, ELEMENTWISE_HP), (BoxKind, BOX_HP), (OutMode, None)):
        if sorted(int(k) for k in enum_cls) != list(range(len(enum_cls))):
            raise ValueError(f'{enum_cls.__name__}: the ids must be 0..{len(enum_cls) - 1}')
        if hp is not None and set(hp) != set(enum_cls):
            raise ValueError(f'{enum_cls.__name__}: every kind needs its hyper-parameter names')
    for key, layout in _LAYOUTS.items():
        if len(set(layout)) != len(layout) or 'size' in layout:
            raise ValueError(f'{key}: the names must be distinct, and none may be \'size\'')


_check()


def interface() -> Dict[str, Union[int, float, Dict[str, int]]]:
    """What a build of the C++ kernels (``kernels/``) must report as ``_fused.interface``: the
    ids of every enum, the hyper-parameter count of every kind, which box kinds add ``eps`` (1)
    rather than clamp at it (0), the index of every name of the fixed layouts and their ``SIZE``,
    the constants and :data:`ABI`.

    Example:
        >>> interface()['BoxKind']['SIOU'], interface()['BoxHp']['SIOU'], interface()['abi'] == ABI
        (7, 1, True)
        >>> interface()['DiceHp']['EPS'], interface()['DiceHp']['SIZE']
        (2, 5)
    """
    out: Dict[str, Union[int, float, Dict[str, int]]] = {'abi': ABI}
    for enum_cls in (ElementwiseKind, BoxKind, OutMode):
        out[enum_cls.__name__] = {k.name: int(k) for k in enum_cls}
    out['ElementwiseHp'] = {k.name: len(v) for k, v in ELEMENTWISE_HP.items()}
    out['BoxHp'] = {k.name: len(v) for k, v in BOX_HP.items()}
    out['BoxEpsAdded'] = {k.name: int(k in BOX_EPS_ADDED) for k in BoxKind}
    for key, layout in _LAYOUTS.items():
        out[key] = {**{name.upper(): i for i, name in enumerate(layout)}, 'SIZE': len(layout)}
    for name in _FLOATS:
        out[name] = float(globals()[name])
    return out


#: the macro prefix of each enum and hyper-parameter count in :func:`cpp_macros`
_MACRO_PREFIX = {'ElementwiseKind': 'MMLOSS_ELEMENTWISE_', 'BoxKind': 'MMLOSS_BOX_', 'OutMode': 'MMLOSS_OUT_',
                 'ElementwiseHp': 'MMLOSS_ELEMENTWISE_HP_', 'BoxHp': 'MMLOSS_BOX_HP_',
                 'BoxEpsAdded': 'MMLOSS_BOX_EPS_ADDED_', 'DiceHp': 'MMLOSS_DICE_HP_',
                 'GaussianFocalHp': 'MMLOSS_GAUSSIAN_FOCAL_HP_'}


def cpp_macros() -> List[Tuple[str, str]]:
    """:func:`interface` as preprocessor definitions for ``setup.py``'s ``define_macros``:
    ``MMLOSS_ABI``, ``MMLOSS_ELEMENTWISE_FOCAL``, ``MMLOSS_BOX_HP_SIOU``, ``MMLOSS_DICE_HP_EPS`` (an
    index), ``MMLOSS_DICE_HP_SIZE``, ``MMLOSS_SIOU_EXP_MAX``, ...
    (floats written with ``repr``, which the C++ parser reads back to the same double).

    Example:
        >>> dict(cpp_macros())['MMLOSS_BOX_GIOU'], dict(cpp_macros())['MMLOSS_SMOOTH_L1_MIN_BETA']
        ('3', '1e-05')
    """
    macros = []
    for key, value in interface().items():
        if isinstance(value, dict):
            macros += [(_MACRO_PREFIX[key] + name, str(v)) for name, v in value.items()]
        else:
            macros.append((f'MMLOSS_{key.upper()}', repr(value)))
    return macros
