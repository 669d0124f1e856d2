r"""Segmentation losses: region-overlap surrogates (Dice, Jaccard, Tversky, focal Tversky) and Lovász.

Every loss here takes one of two input layouts, chosen by ``mode``:

* ``mode='binary'``: ``pred`` holds logits of shape :math:`(N, *)` (at least 2-D) and ``target`` a
  mask of the same shape (float in [0, 1], bool, or integer 0/1). ``pred`` of shape
  :math:`(N, 1, *)` with ``target`` :math:`(N, *)` is accepted too. As in mmdet's ``dice_loss``, the
  overlap statistics of a sample are summed over all its non-batch elements: ``'none'`` gives
  :math:`(N,)` and ``weight`` is per sample.
* ``mode='multiclass'``: ``pred`` holds logits :math:`(N, C, *)`, ``target`` integer labels
  :math:`(N, *)` in :math:`[0, C-1]`. The prediction is the softmax over :math:`C`, the target is
  one-hot; statistics are per sample and class: ``'none'`` gives :math:`(N, C)` (Lovász: see
  :func:`lovasz_loss`), ``weight`` is :math:`(N, C)` or per sample :math:`(N,)`.

``ignore_index`` (default ``None``, i.e. nothing ignored): target elements equal to it take no part
in any sum (pred and target are both masked out there), e.g. ``ignore_index=255`` for mmseg-style
label maps.

Half-precision inputs are computed in float32 and the loss is returned in ``pred``'s dtype.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.abi import DICE_DENOMINATOR_MIN
from ..core.errors import LossValueError
from ..core.hparams import NON_NEGATIVE, OPTIONAL_INT, POSITIVE, Choice, declare
from ..core.inputs import check_int_tensor, check_label_range, check_same_device, check_tensor, upcast
from ..core.reduction import AvgFactor, weight_reduce_loss
from ..kernels import dice as fused, use_fused
from ..registry import register_loss
from .base import BaseLoss
from . import probes

__all__ = [
    'dice_loss', 'jaccard_loss', 'tversky_loss', 'focal_tversky_loss', 'lovasz_loss',
    'DiceLoss', 'JaccardLoss', 'TverskyLoss', 'FocalTverskyLoss', 'LovaszLoss',
]

MODES = ('binary', 'multiclass')
#: floor of the ratio denominators that have no user eps of their own (empty masks with smooth=0);
#: the Dice loss's, which its kernel shares, is :data:`~mmloss_ext.core.abi.DICE_DENOMINATOR_MIN`
_TINY = 1e-12
#: the declarations every loss of the family shares
_LAYOUT = dict(mode=Choice(*MODES), ignore_index=OPTIONAL_INT)
_TVERSKY = dict(_LAYOUT, alpha=NON_NEGATIVE, beta=NON_NEGATIVE, smooth=NON_NEGATIVE)


# --- shared input handling ------------------------------------------------------------------------

def _check_pair(name: str, pred: Tensor, target: Tensor, mode: str) -> None:
    """The checks of :func:`_prepare` that need no computation (binary mode: all of them)."""
    check_tensor(name, 'pred', pred)
    check_tensor(name, 'target', target, floating=False)
    check_same_device(name, pred, target)
    if pred.dim() < 2:
        want = '(N, *)' if mode == 'binary' else '(N, C, *)'
        raise LossValueError(f'{name}: `pred` expected shape {want} with at least 2 dims for '
                         f"mode='{mode}', got {tuple(pred.shape)}")
    if mode == 'binary' and pred.shape != target.shape and not (
            pred.dim() == target.dim() + 1 and pred.shape[1] == 1 and pred.shape[:1] + pred.shape[2:] == target.shape):
        raise LossValueError(f"{name}: `pred` and `target` expected the same shape (or pred (N, 1, *) "
                         f"with target (N, *)) for mode='binary', got {tuple(pred.shape)} and "
                         f'{tuple(target.shape)}')


def _prepare(name: str, pred: Tensor, target: Tensor, mode: str, ignore_index: Optional[int],
             activation: Optional[str]) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Validate a segmentation (pred, target) pair and flatten it to per-class rows.

    Args:
        activation: ``None`` (``pred`` already holds probabilities / raw scores), ``'sigmoid'``
            (elementwise) or ``'softmax'`` (over dim 1).

    Returns:
        ``(scores, prob, onehot, valid)``: the raw ``pred`` and the activated one as
        :math:`(N, K, P)` (float32 for half inputs), the target as float :math:`(N, K, P)` and a
        float :math:`(N, 1, P)` mask of the non-ignored elements (``None`` when nothing is
        ignored). ``prob`` and ``onehot`` are already zero where ``valid`` is zero. ``K`` is 1 in
        binary mode and ``C`` in multiclass mode.
    """
    _check_pair(name, pred, target, mode)
    (scores,) = upcast(pred)
    if mode == 'binary':
        prob = scores if activation is None else (
            scores.sigmoid() if activation == 'sigmoid' else scores.softmax(1))
        scores, prob = scores.flatten(1).unsqueeze(1), prob.flatten(1).unsqueeze(1)
        flat_target = target.flatten(1).unsqueeze(1)
        valid = None if ignore_index is None else flat_target != ignore_index
        onehot = flat_target.to(scores.dtype)
    else:
        check_int_tensor(name, 'target', target)
        if target.shape != pred.shape[:1] + pred.shape[2:]:
            raise LossValueError(f"{name}: `target` expected integer labels of shape (N, *) = "
                             f"{tuple(pred.shape[:1] + pred.shape[2:])} for pred of shape "
                             f"{tuple(pred.shape)} (mode='multiclass'), got {tuple(target.shape)}")
        num_classes = pred.shape[1]
        check_label_range(name, 'target', target, 0, num_classes - 1, ignore_index)
        prob = scores if activation is None else scores.softmax(1)
        scores, prob = scores.flatten(2), prob.flatten(2)
        labels = target.flatten(1)
        valid = None if ignore_index is None else (labels != ignore_index).unsqueeze(1)
        if valid is not None:
            labels = labels.masked_fill(~valid[:, 0], 0)
        onehot = F.one_hot(labels.long(), num_classes).transpose(1, 2).to(scores.dtype)
    if valid is not None:
        valid = valid.to(scores.dtype)
        prob, onehot = prob * valid, onehot * valid
    return scores, prob, onehot, valid


def _reduce(name: str, loss: Tensor, mode: str, pred: Tensor, weight: Optional[Tensor], reduction: str,
            avg_factor: AvgFactor) -> Tensor:
    """(N, K) per sample-and-class loss -> (N,) in binary mode, then weight, reduce, cast back."""
    if mode == 'binary':
        loss = loss.squeeze(1)
    return weight_reduce_loss(loss, weight, reduction, avg_factor, name=name).to(pred.dtype)


def _tversky_index(name: str, pred: Tensor, target: Tensor, alpha: float, beta: float, smooth: float, mode: str,
                   ignore_index: Optional[int]) -> Tensor:
    r""":math:`(TP + s) / (TP + \alpha FP + \beta FN + s)` of the sigmoid / softmax, shape (N, K)."""
    _, prob, onehot, _ = _prepare(name, pred, target, mode, ignore_index,
                                  'sigmoid' if mode == 'binary' else 'softmax')
    tp = (prob * onehot).sum(-1)
    fp = (prob * (1.0 - onehot)).sum(-1)
    fn = ((1.0 - prob) * onehot).sum(-1)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp_min(_TINY)


# --- overlap losses -------------------------------------------------------------------------------

@declare('DiceLoss', probe=probes.dice, eps=NON_NEGATIVE, **_LAYOUT)
def dice_loss(pred: Tensor, target: Tensor, *, use_sigmoid: bool = True, activate: bool = True,
              naive_dice: bool = False, eps: float = 1e-3, mode: str = 'binary',
              ignore_index: Optional[int] = None, impl: str = 'auto', weight: Optional[Tensor] = None,
              reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Dice loss (V-Net, Milletari et al. 2016), with mmdet's options.

    With :math:`p` the activated prediction and :math:`t` the target of one sample (and class):

    .. math::
        L = 1 - \frac{2\sum p t}{\sum p^2 + \epsilon + \sum t^2 + \epsilon}
        \quad\text{or, with naive\_dice,}\quad
        L = 1 - \frac{2\sum p t + \epsilon}{\sum p + \sum t + \epsilon}

    Args:
        pred: logits, :math:`(N, *)` (binary) or :math:`(N, C, *)` (multiclass); probabilities when
            ``activate=False``.
        target: mask of ``pred``'s shape (binary) or integer labels :math:`(N, *)` (multiclass).
        use_sigmoid: binary mode: sigmoid (True) or softmax over dim 1 (False) when activating
            (mmdet raises ``NotImplementedError`` for the latter; here it is the softmax).
            Multiclass mode always uses the softmax over :math:`C`.
        activate: apply the activation; False when ``pred`` already holds probabilities.
        naive_dice: first powers in the denominator (the "naive" Dice) instead of squares.
        eps: smoothing term, placed as in mmdet for each form.
        mode: ``'binary'`` | ``'multiclass'`` (see the module docstring).
        ignore_index: target value excluded from the sums (``None``: nothing ignored).
        impl: ``'auto'`` | ``'eager'`` | ``'fused'`` (:mod:`mmloss_ext.kernels.dispatch`); binary
            mode with the sigmoid (or ``activate=False``) has a fused kernel.
        weight: per-sample :math:`(N,)` weight (or :math:`(N, C)` in multiclass mode).
        reduction, avg_factor: as in mmdet.

    Returns:
        :math:`(N,)` (binary) or :math:`(N, C)` (multiclass) for ``'none'``, else a scalar.
        In binary mode this is mmdet's ``DiceLoss`` exactly.

    Example:
        >>> pred = torch.tensor([[1.0, 0.0]])  # probabilities
        >>> target = torch.tensor([[1.0, 0.0]])
        >>> dice_loss(pred, target, activate=False, naive_dice=True, eps=0.0)  # 1 - 2/2
        tensor(0.)
        >>> dice_loss(torch.tensor([[0.5, 0.5]]), target, activate=False, naive_dice=True, eps=0.0)  # 1 - 1/2
        tensor(0.5000)
    """
    name = dice_loss.spec.loss
    activation = None
    if activate:
        activation = 'sigmoid' if use_sigmoid and mode == 'binary' else 'softmax'
    if use_fused(name, impl, pred, op='dice', supported=mode == 'binary' and activation != 'softmax',
                 others=(target, weight)):
        _check_pair(name, pred, target, mode)
        return fused.dice_family(name, pred, target, sigmoid=activate, naive=naive_dice, eps=eps,
                                 ignore_index=ignore_index, weight=weight, reduction=reduction, avg_factor=avg_factor)
    _, prob, onehot, _ = _prepare(name, pred, target, mode, ignore_index, activation)
    inter = (prob * onehot).sum(-1)
    if naive_dice:
        coeff = (2.0 * inter + eps) / (prob.sum(-1) + onehot.sum(-1) + eps).clamp_min(DICE_DENOMINATOR_MIN)
    else:
        den = (prob * prob).sum(-1) + eps + (onehot * onehot).sum(-1) + eps
        coeff = 2.0 * inter / den.clamp_min(DICE_DENOMINATOR_MIN)
    return _reduce(name, 1.0 - coeff, mode, pred, weight, reduction, avg_factor)


@declare('JaccardLoss', smooth=NON_NEGATIVE, eps=NON_NEGATIVE, **_LAYOUT)
def jaccard_loss(pred: Tensor, target: Tensor, *, mode: str = 'binary', smooth: float = 0.0, eps: float = 1e-7,
                 from_logits: bool = True, ignore_index: Optional[int] = None, weight: Optional[Tensor] = None,
                 reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Jaccard (soft IoU) loss, per sample and class.

    .. math::
        I = \sum p t, \quad U = \sum p + \sum t - I, \quad
        L = 1 - \frac{I + s}{\max(U + s,\ \epsilon)}

    For hard masks this is :math:`1 - J` with :math:`J = D / (2 - D)` the IoU of the Dice
    coefficient :math:`D`. With ``smooth=0`` a sample whose prediction and target are both empty
    has loss 1; a positive ``smooth`` makes it 0.

    Args:
        pred, target, mode, ignore_index, weight, reduction, avg_factor: see :func:`dice_loss`.
        smooth: :math:`s`, added to the intersection and the union.
        eps: floor of the denominator.
        from_logits: apply sigmoid (binary) / softmax (multiclass) to ``pred`` first.

    Returns:
        :math:`(N,)` (binary) or :math:`(N, C)` (multiclass) for ``'none'``, else a scalar.

    Example:
        >>> pred = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # hard prediction
        >>> target = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
        >>> jaccard_loss(pred, target, from_logits=False)  # I = 1, U = 3
        tensor(0.6667)
    """
    name = jaccard_loss.spec.loss
    activation = ('sigmoid' if mode == 'binary' else 'softmax') if from_logits else None
    _, prob, onehot, _ = _prepare(name, pred, target, mode, ignore_index, activation)
    inter = (prob * onehot).sum(-1)
    union = prob.sum(-1) + onehot.sum(-1) - inter
    score = (inter + smooth) / (union + smooth).clamp_min(max(eps, _TINY))
    return _reduce(name, 1.0 - score, mode, pred, weight, reduction, avg_factor)


@declare('TverskyLoss', **_TVERSKY)
def tversky_loss(pred: Tensor, target: Tensor, *, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-5,
                 mode: str = 'binary', ignore_index: Optional[int] = None, weight: Optional[Tensor] = None,
                 reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Tversky loss (Salehi et al. 2017): Dice with separate weights on false positives and negatives.

    With :math:`p` = sigmoid (binary) / softmax (multiclass) of the logits:

    .. math::
        TP = \sum p t,\ FP = \sum p (1 - t),\ FN = \sum (1 - p) t, \qquad
        L = 1 - \frac{TP + s}{TP + \alpha FP + \beta FN + s}

    :math:`\alpha = \beta = 0.5` gives the naive Dice loss with :math:`\epsilon = 2s`.

    Args:
        pred, target, mode, ignore_index, weight, reduction, avg_factor: see :func:`dice_loss`
            (``pred`` holds logits).
        alpha: weight of the false positives.
        beta: weight of the false negatives.
        smooth: :math:`s`, added to numerator and denominator.

    Returns:
        :math:`(N,)` (binary) or :math:`(N, C)` (multiclass) for ``'none'``, else a scalar.

    Example:
        >>> logits = torch.tensor([[20.0, 20.0, -20.0, -20.0]])  # p ~ [1, 1, 0, 0]
        >>> target = torch.tensor([[1.0, 0.0, 1.0, 0.0]])  # TP = FP = FN = 1
        >>> tversky_loss(logits, target, alpha=0.3, beta=0.7, smooth=0.0)  # 1 - 1 / 2
        tensor(0.5000)
    """
    name = tversky_loss.spec.loss
    index = _tversky_index(name, pred, target, alpha, beta, smooth, mode, ignore_index)
    return _reduce(name, 1.0 - index, mode, pred, weight, reduction, avg_factor)


@declare('FocalTverskyLoss', gamma=POSITIVE, **_TVERSKY)
def focal_tversky_loss(pred: Tensor, target: Tensor, *, alpha: float = 0.5, beta: float = 0.5,
                       gamma: float = 0.75, smooth: float = 1e-5, mode: str = 'binary',
                       ignore_index: Optional[int] = None, weight: Optional[Tensor] = None,
                       reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Focal Tversky loss (Abraham & Khan 2019).

    .. math:: L = (1 - TI)^{\gamma}

    with :math:`TI` the Tversky index of :func:`tversky_loss`. ``gamma=1`` is the Tversky loss. For :math:`\gamma < 1` the slope
    :math:`\gamma (1 - TI)^{\gamma - 1}` is infinite at :math:`TI = 1`; the base is floored at
    ``1e-12`` so the gradient stays finite (at most :math:`\gamma \cdot 10^{12(1-\gamma)}`), which
    changes the loss by at most :math:`10^{-12\gamma}`.

    Args:
        pred, target, alpha, beta, smooth, mode, ignore_index, weight, reduction, avg_factor:
            see :func:`tversky_loss`.
        gamma: the focal exponent, > 0.

    Returns:
        :math:`(N,)` (binary) or :math:`(N, C)` (multiclass) for ``'none'``, else a scalar.

    Example:
        >>> logits = torch.tensor([[20.0, 20.0, -20.0, -20.0]])
        >>> target = torch.tensor([[1.0, 0.0, 1.0, 0.0]])  # TI = 1 / 2
        >>> focal_tversky_loss(logits, target, gamma=2.0, smooth=0.0)  # (1 - 1/2) ** 2
        tensor(0.2500)
    """
    name = focal_tversky_loss.spec.loss
    index = _tversky_index(name, pred, target, alpha, beta, smooth, mode, ignore_index)
    return _reduce(name, (1.0 - index).clamp_min(_TINY) ** gamma, mode, pred, weight, reduction, avg_factor)


# --- Lovász ---------------------------------------------------------------------------------------

def _lovasz_per_class(errors: Tensor, fg: Tensor, valid: Optional[Tensor]) -> Tensor:
    r"""Lovász extension of the Jaccard loss, for every row at once.

    Args:
        errors: :math:`(G, K, P)` per-element errors (hinge margins or :math:`|fg - p|`).
        fg: :math:`(G, K, P)` binary foreground, zero where ignored.
        valid: :math:`(G, 1, P)` float mask of the kept elements, or ``None``.

    Returns:
        :math:`(G, K)`: :math:`\sum_i \mathrm{relu}(e_{(i)})\, g_i` with the errors sorted in
        decreasing order and :math:`g` the discrete derivative of
        :math:`1 - |fg \setminus \text{top}_i| / |fg \cup \text{top}_i|` (Berman et al. 2018,
        Alg. 1). Ignored elements sort last with a zero error; they sit past the last foreground
        element, where :math:`g = 0`, so they change nothing.
    """
    key = errors if valid is None else errors.masked_fill(valid == 0, float('-inf'))
    perm = key.sort(dim=-1, descending=True).indices
    errors_sorted = errors.gather(-1, perm)
    if valid is not None:
        errors_sorted = errors_sorted * valid.expand_as(errors).gather(-1, perm)
    fg_sorted = fg.gather(-1, perm)
    total = fg_sorted.sum(-1, keepdim=True)
    intersection = total - fg_sorted.cumsum(-1)
    union = total + (1.0 - fg_sorted).cumsum(-1)  # >= 1 at every position
    jaccard = 1.0 - intersection / union
    grad = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)
    return (errors_sorted.relu() * grad).sum(-1)


@declare('LovaszLoss', classes=Choice('present', 'all'), **_LAYOUT)
def lovasz_loss(pred: Tensor, target: Tensor, *, mode: str = 'binary', per_image: bool = False,
                classes: str = 'present', ignore_index: Optional[int] = None, weight: Optional[Tensor] = None,
                reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Lovász hinge / Lovász-softmax loss (Berman et al. 2018), a convex surrogate of 1 − IoU.

    The elements of a group (one image when ``per_image``, else the whole batch) are sorted by
    error :math:`e` in decreasing order and :math:`L = \sum_i \mathrm{relu}(e_{(i)})\, g_i`, with
    :math:`g` the gradient of the Lovász extension of the Jaccard loss:

    .. math::
        L = \sum_i \mathrm{relu}(e_{(i)})\,\big(J_i - J_{i-1}\big),\qquad
        J_i = 1 - \frac{|T| - \sum_{k \le i} t_{(k)}}{|T| + \sum_{k \le i} (1 - t_{(k)})}

    * binary: ``pred`` logits, ``target`` 0/1 mask; :math:`e = 1 - x\,(2t - 1)` (Lovász hinge).
    * multiclass: ``pred`` logits :math:`(N, C, *)`, ``target`` labels :math:`(N, *)`;
      :math:`e = |[t = c] - \mathrm{softmax}(x)_c|` per class, the group's loss is the mean over
      the classes present in its (non-ignored) target (``classes='present'``; 0 when none is) or
      over all :math:`C` (``classes='all'``).

    The sort and the cumulative sums run on all groups and classes at once.

    Args:
        pred, target, mode, ignore_index: see :func:`dice_loss`.
        per_image: one loss per image (True) or one loss for the whole batch (False).
        classes: ``'present'`` | ``'all'`` (multiclass mode only).
        weight: per-image :math:`(N,)` weight when ``per_image``; otherwise a scalar weight.
        reduction, avg_factor: as in mmdet.

    Returns:
        For ``'none'``: :math:`(N,)` per-image losses when ``per_image``, else a 0-d tensor (the
        batch is one group: its loss does not split over images). A scalar otherwise.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.5]])
        >>> target = torch.tensor([[1, 0, 0]])
        >>> lovasz_loss(logits, target)  # errors [-1, 0, 1.5] -> 1.5 * (1 - 1/2)
        tensor(0.7500)
    """
    name = lovasz_loss.spec.loss
    activation = None if mode == 'binary' else 'softmax'
    scores, prob, fg, valid = _prepare(name, pred, target, mode, ignore_index, activation)
    if mode == 'binary':
        errors = 1.0 - scores * (2.0 * fg - 1.0)
    else:
        errors = (fg - prob).abs()
    if not per_image:  # (N, K, P) -> one group (1, K, N * P)
        n, _, p = errors.shape

        def merge(x: Tensor) -> Tensor:
            return x.transpose(0, 1).reshape(1, x.shape[1], n * p)

        errors, fg = merge(errors), merge(fg)
        valid = None if valid is None else merge(valid)
    per_class = _lovasz_per_class(errors, fg, valid)  # (G, K)
    if mode == 'binary':
        loss = per_class[:, 0]
    elif classes == 'all':
        loss = per_class.mean(1)
    else:
        present = (fg.sum(-1) > 0).to(per_class.dtype)
        loss = (per_class * present).sum(1) / present.sum(1).clamp_min(1.0)
    if not per_image:
        loss = loss.squeeze(0)
    return weight_reduce_loss(loss, weight, reduction, avg_factor, name=name).to(pred.dtype)


# --- registered modules ---------------------------------------------------------------------------

class SegmentationLoss(BaseLoss):
    """Base of the segmentation family: logits against masks or label maps, by ``mode``."""
    family = 'segmentation'
    inputs = 'pred: (N, C, H, W) or (N, H, W) logits; target: masks or int labels'


@register_loss
class DiceLoss(SegmentationLoss):
    """Dice loss module, a drop-in for mmdet's ``DiceLoss``; see :func:`dice_loss`.

    ``forward(pred, target, weight, reduction_override, avg_factor)`` takes mmdet's order (its
    fourth positional argument is ``reduction_override``, unlike the other losses).

    Differences from mmdet: ``use_sigmoid=False`` with ``activate=True`` computes the Dice of the
    softmax over dim 1 (mmdet raises ``NotImplementedError``); ``mode='multiclass'`` and
    ``ignore_index`` are additions.
    """
    loss_fn = staticmethod(dice_loss)
    positional = ('use_sigmoid', 'activate', 'reduction', 'naive_dice', 'loss_weight', 'eps')
    reference = 'mmdet DiceLoss, MONAI DiceLoss'

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                reduction_override: Optional[str] = None, avg_factor: AvgFactor = None, **kwargs) -> Tensor:
        return super().forward(pred, target, weight, avg_factor, reduction_override, **kwargs)


@register_loss
class JaccardLoss(SegmentationLoss):
    """Jaccard (soft IoU) loss module; see :func:`jaccard_loss`."""
    loss_fn = staticmethod(jaccard_loss)


@register_loss
class TverskyLoss(SegmentationLoss):
    """Tversky loss module; see :func:`tversky_loss`."""
    loss_fn = staticmethod(tversky_loss)
    reference = 'MONAI TverskyLoss'


@register_loss
class FocalTverskyLoss(SegmentationLoss):
    """Focal Tversky loss module; see :func:`focal_tversky_loss`."""
    loss_fn = staticmethod(focal_tversky_loss)


@register_loss
class LovaszLoss(SegmentationLoss):
    """Lovász hinge / Lovász-softmax module; see :func:`lovasz_loss`."""
    loss_fn = staticmethod(lovasz_loss)
    reference = 'kornia lovasz_hinge_loss / lovasz_softmax_loss'
