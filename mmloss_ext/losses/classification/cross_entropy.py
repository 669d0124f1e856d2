r"""Cross-entropy family: CrossEntropyLoss (mmdet's, plus label smoothing and soft targets), BCELoss,
NLLLoss, KLDivLoss and BalancedCrossEntropyLoss.

Class scores are on dim 1 (``(N, C, ...)``); integer labels have ``pred``'s shape without dim 1.
Per-sample losses (softmax cross-entropy, NLL, KL) give ``(N, ...)`` for ``'none'``; sigmoid
(binary) losses are elementwise and give ``pred``'s shape.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.errors import LossValueError
from ...core.hparams import OPTIONAL_INT, POSITIVE, UNIT_INTERVAL, Range, declare
from ...core.inputs import (check_int_tensor, check_label_range, check_same_device, check_tensor,
                            check_values)
from ...core.reduction import AvgFactor, count_avg_factor
from ...kernels import cross_entropy as fused, use_fused
from ...registry import register_loss
from ._common import (ClassificationLoss, along_dim1, bce, check_class_labels, check_logits, check_target_like,
                      class_mask, finish, gather_class, per_class)
from .. import probes

__all__ = [
    'cross_entropy_loss', 'bce_loss', 'nll_loss', 'kl_div_loss', 'balanced_cross_entropy_loss',
    'CrossEntropyLoss', 'BCELoss', 'NLLLoss', 'KLDivLoss', 'BalancedCrossEntropyLoss',
]

ClassWeight = Optional[Union[Sequence[float], Tensor]]
#: the label torch (and mmdet, when ``ignore_index=None``) ignores
TORCH_IGNORE = -100


def _nll(name: str, logp: Tensor, target: Tensor, class_weight: Optional[Tensor], ignore_index: int):
    """``-w_y log p_y`` per sample (unmasked) and the mask of non-ignored labels."""
    check_class_labels(name, logp, target, logp.shape[1] - 1, ignore_index=ignore_index)
    valid = target != ignore_index
    labels = target.masked_fill(~valid, 0)
    loss = -gather_class(logp, labels)
    if class_weight is not None:
        loss = loss * class_weight[labels]
    return loss, valid


def _softmax_ce(name: str, x: Tensor, target: Tensor, class_weight, ignore_index, smoothing: float):
    """torch ``cross_entropy(reduction='none')``: integer labels or probability targets."""
    num_classes = x.shape[1]
    cw = per_class(name, 'class_weight', class_weight, x, num_classes)
    logp = F.log_softmax(x, dim=1)
    if target.is_floating_point() and target.dim() == x.dim():  # probabilities over the classes
        t = check_target_like(name, x, target)
        if smoothing:
            t = t * (1.0 - smoothing) + smoothing / num_classes
        if cw is not None:
            t = t * along_dim1(cw, x.dim())
        return -(t * logp).sum(1), None
    ignore = TORCH_IGNORE if ignore_index is None else ignore_index
    loss, valid = _nll(name, logp, target, cw, ignore)
    if smoothing:
        wlogp = logp if cw is None else logp * along_dim1(cw, x.dim())
        loss = (1.0 - smoothing) * loss - smoothing / num_classes * wlogp.sum(1)
    return loss.masked_fill(~valid, 0.0), valid.sum()


def _sigmoid_ce(name: str, x: Tensor, target: Tensor, class_weight, ignore_index, smoothing: float):
    """mmdet ``binary_cross_entropy``: (N,) labels expand to one-hot (N, C), label C = background;
    ``class_weight`` is BCE's ``pos_weight``; ignored labels get weight 0."""
    ignore = TORCH_IGNORE if ignore_index is None else ignore_index
    num_classes = x.shape[-1] if x.dim() else 1
    pos_weight = per_class(name, 'class_weight', class_weight, x, num_classes, allow_one=True)
    if target.dim() != x.dim():
        if x.dim() != 2:
            raise LossValueError(f'{name}: use_sigmoid=True with integer labels expected `pred` of shape (N, C), '
                             f'got {tuple(x.shape)}')
        check_class_labels(name, x, target, num_classes, ignore_index=ignore)
        valid = (target != ignore).unsqueeze(1)
        t = class_mask(target, num_classes).to(x.dtype)
        count = valid.sum() * num_classes
    else:
        t = check_target_like(name, x, target)
        if not target.is_floating_point():
            check_label_range(name, 'target', target, 0, 1, ignore)
        valid = (target >= 0) & (target != ignore)
        count = valid.sum()
    if smoothing:
        t = t * (1.0 - smoothing) + 0.5 * smoothing
    return bce(x, t, pos_weight).masked_fill(~valid, 0.0), count


def _mask_ce(name: str, x: Tensor, target: Tensor, label, class_weight, smoothing: float):
    """mmdet ``mask_cross_entropy``: BCE of each RoI's mask logits for its class ``label``."""
    if x.dim() < 2:
        raise LossValueError(f'{name}: use_mask=True expected `pred` of shape (N, C, ...), got {tuple(x.shape)}')
    if label is None:
        raise LossValueError(f'{name}: use_mask=True expected the RoI class `label` of shape ({x.shape[0]},), got None')
    check_int_tensor(name, 'label', label)
    if tuple(label.shape) != (x.shape[0],):
        raise LossValueError(f'{name}: `label` expected shape ({x.shape[0]},), got {tuple(label.shape)}')
    check_label_range(name, 'label', label, 0, x.shape[1] - 1)
    logits = x[torch.arange(x.shape[0], device=x.device), label]
    t = check_target_like(name, logits, target)
    if smoothing:
        t = t * (1.0 - smoothing) + 0.5 * smoothing
    loss = bce(logits, t)
    cw = per_class(name, 'class_weight', class_weight, x, x.shape[1])
    if cw is not None:
        loss = loss * cw[label].view(-1, *([1] * (loss.dim() - 1)))
    return loss, None


def _check_label_shape(name: str, x: Tensor, target: Tensor) -> None:
    """:func:`check_class_labels` for (N, C) logits, without the value check."""
    check_int_tensor(name, 'target', target)
    if tuple(target.shape) != x.shape[:1]:
        raise LossValueError(f'{name}: `target` expected integer labels of shape {tuple(x.shape[:1])} for `pred` of '
                         f'shape {tuple(x.shape)} (classes on dim 1), got {tuple(target.shape)}')
    check_same_device(name, x, target, ('pred', 'target'))


def _check_ce_modes(name: str, *, use_sigmoid: bool, use_mask: bool, ignore_index, **_) -> None:
    """At most one of mmdet's two non-softmax modes; no ``ignore_index`` for masks."""
    if use_sigmoid and use_mask:
        raise LossValueError(f'{name}: `use_sigmoid` and `use_mask` expected at most one True, got both')
    if use_mask and ignore_index is not None:
        raise LossValueError(f'{name}: use_mask=True expected ignore_index=None, got {ignore_index!r}')


def fused_softmax_ce(name: str, x: Tensor, target: Tensor, out_dtype: torch.dtype, class_weight, ignore_index,
                     avg_non_ignore: bool, weight: Optional[Tensor], reduction: str, avg_factor: AvgFactor) -> Tensor:
    """The fused softmax cross-entropy of logits ``x`` (N, C) against labels ``target`` (N,), as
    :func:`cross_entropy_loss` computes it (label values are checked by the kernel, in its pass)."""
    ignore = TORCH_IGNORE if ignore_index is None else ignore_index
    _check_label_shape(name, x, target)
    cw = per_class(name, 'class_weight', class_weight, x, x.shape[1])
    if avg_non_ignore:
        avg_factor = count_avg_factor(reduction, (target != ignore).sum(), avg_factor)
    return fused.cross_entropy_family(name, x, target, out_dtype, class_weight=cw, ignore_index=ignore,
                                      weight=weight, reduction=reduction, avg_factor=avg_factor)


@declare('CrossEntropyLoss', probe=probes.logits, label_smoothing=UNIT_INTERVAL, ignore_index=OPTIONAL_INT, relation=_check_ce_modes)
def cross_entropy_loss(pred: Tensor, target: Tensor, label: Optional[Tensor] = None, *,
                       use_sigmoid: bool = False, use_mask: bool = False, class_weight: ClassWeight = None,
                       ignore_index: Optional[int] = None, avg_non_ignore: bool = False,
                       label_smoothing: float = 0.0, impl: str = 'auto', weight: Optional[Tensor] = None,
                       reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Cross-entropy with mmdet's three modes, label smoothing and soft targets.

    Softmax (default), with :math:`w` the ``class_weight``, :math:`\epsilon` the
    ``label_smoothing`` and :math:`C` classes on dim 1:

    .. math:: \ell = -(1-\epsilon)\, w_y \log p_y - \frac{\epsilon}{C} \sum_c w_c \log p_c,
              \quad p = \operatorname{softmax}(x)

    ``target`` is integer labels ``(N, ...)`` (``ignore_index``, or -100 when it is None, gives 0)
    or probabilities of ``pred``'s shape (:math:`-\sum_c w_c t_c \log p_c`, smoothed towards
    :math:`1/C`; ``ignore_index`` does not apply to them), as torch's ``cross_entropy``.
    ``'none'`` gives ``(N, ...)``.

    ``use_sigmoid=True`` is mmdet's ``binary_cross_entropy``: logits ``(N, C)`` with labels ``(N,)``
    in ``[0, C]`` expand to one-hot (label ``C`` is background: an all-zero row; the RPN's
    ``(N, 1)`` logits with 1 = background are the case ``C = 1``), or targets of ``pred``'s shape;
    ``class_weight`` is the ``pos_weight`` of each class; ignored labels get weight 0; smoothing
    uses binary targets :math:`t(1-\epsilon) + \epsilon/2`. ``'none'`` gives ``pred``'s shape.

    ``use_mask=True`` is mmdet's ``mask_cross_entropy``: logits ``(N, C, *)``, mask targets
    ``(N, *)`` and the RoIs' classes ``label`` ``(N,)``; the BCE of each RoI's mask for its class,
    ``'none'`` giving ``(N, *)``. mmdet mask heads pass ``label`` as the third positional argument
    of the module (where ``weight`` normally goes); :class:`CrossEntropyLoss` does the same.

    ``avg_non_ignore=True`` makes ``'mean'`` (without ``avg_factor``) divide by the number of
    non-ignored elements (a tensor: no host sync).

    ``impl``: ``'auto'`` | ``'eager'`` | ``'fused'`` (:mod:`mmloss_ext.kernels.dispatch`); the
    softmax form on ``(N, C)`` logits with integer labels and no label smoothing has a fused
    kernel (``class_weight``, ``ignore_index``, ``avg_non_ignore`` and weights included).

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> cross_entropy_loss(logits, torch.tensor([0, 2]), reduction='none')
        tensor([0.2395, 1.0986])
        >>> cross_entropy_loss(logits, torch.tensor([0, 3]), use_sigmoid=True, reduction='sum')
        tensor(3.5927)
    """
    name = cross_entropy_loss.spec.loss
    x = check_logits(name, pred, min_dim=0 if use_sigmoid else 2)
    check_tensor(name, 'target', target, floating=False)
    if use_fused(name, impl, x, op='cross_entropy', supported=not (use_sigmoid or use_mask or label_smoothing or target.is_floating_point())
                 and x.dim() == 2, others=(weight, class_weight)):
        return fused_softmax_ce(name, x, target, pred.dtype, class_weight, ignore_index, avg_non_ignore, weight,
                                reduction, avg_factor)
    if use_mask:
        loss, count = _mask_ce(name, x, target, label, class_weight, label_smoothing)
    elif use_sigmoid:
        loss, count = _sigmoid_ce(name, x, target, class_weight, ignore_index, label_smoothing)
    else:
        loss, count = _softmax_ce(name, x, target, class_weight, ignore_index, label_smoothing)
    if avg_non_ignore:
        avg_factor = count_avg_factor(reduction, count, avg_factor)
    return finish(name, loss, pred, weight, reduction, avg_factor)


@declare('BCELoss')
def bce_loss(pred: Tensor, target: Tensor, *, use_logits: bool = True, pos_weight: ClassWeight = None,
             weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Binary cross-entropy of logits (default) or probabilities (``use_logits=False``).

    .. math:: \ell = -[w_+\, t \log p + (1 - t) \log(1 - p)]

    ``pos_weight`` :math:`w_+` (a list, number or tensor) broadcasts over the last dim, as in
    torch's ``binary_cross_entropy_with_logits``. Logits are handled in logit space; probabilities
    have their logs clamped at -100 as torch's ``binary_cross_entropy`` does (with a zero
    gradient there), so ``p = 0`` or ``1`` stays finite. ``'none'`` gives ``pred``'s shape.

    Example:
        >>> bce_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]), reduction='none')
        tensor([0.6931, 2.1269])
        >>> bce_loss(torch.tensor([0.0, 0.5]), torch.tensor([1.0, 1.0]), use_logits=False, reduction='none')
        tensor([100.0000,   0.6931])
    """
    name = bce_loss.spec.loss
    x = check_logits(name, pred, min_dim=0)
    t = check_target_like(name, x, target)
    pw = per_class(name, 'pos_weight', pos_weight, x, x.shape[-1] if x.dim() else 1, allow_one=True)
    return finish(name, bce(x, t, pw, activated=not use_logits), pred, weight, reduction, avg_factor)


@declare('NLLLoss')
def nll_loss(pred: Tensor, target: Tensor, *, class_weight: ClassWeight = None, ignore_index: int = TORCH_IGNORE,
             weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Negative log-likelihood of log-probabilities ``pred`` (N, C, ...) at integer labels (N, ...).

    .. math:: \ell = -w_y\, \text{pred}_y \quad (0 \text{ for } y = \text{ignore\_index})

    torch's ``nll_loss(reduction='none')``; the reduction is mmdet's (``'mean'`` averages over all
    samples, ignored ones included). ``'none'`` gives ``(N, ...)``.

    Example:
        >>> logp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
        >>> nll_loss(logp, torch.tensor([0, 1]), reduction='none')
        tensor([0.6931, 0.2877])
    """
    name = nll_loss.spec.loss
    logp = check_logits(name, pred, min_dim=2)
    cw = per_class(name, 'class_weight', class_weight, logp, logp.shape[1])
    loss, valid = _nll(name, logp, target, cw, ignore_index)
    return finish(name, loss.masked_fill(~valid, 0.0), pred, weight, reduction, avg_factor)


@declare('KLDivLoss', temperature=POSITIVE)  # mmdet's KD loss asserts T >= 1; any T > 0 is valid
def kl_div_loss(pred: Tensor, target: Tensor, *, temperature: float = 1.0, target_logits: bool = True,
                weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Distillation KL divergence KL(teacher ‖ student) per sample, scaled by :math:`T^2`
    (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network").

    .. math:: \ell = T^2 \sum_c q_c (\log q_c - \log p_c),\quad p = \operatorname{softmax}(x/T),\ 
              q = \operatorname{softmax}(t/T)

    ``pred`` is the student's logits (N, C, ...), ``target`` the teacher's logits of the same shape,
    or its probabilities :math:`q` when ``target_logits=False`` (then used as given). The teacher
    is not detached. ``'none'`` gives ``(N, ...)``. mmdet's ``KnowledgeDistillationKLDivLoss``
    averages over the classes instead of summing: it equals this loss divided by ``C``.

    Example:
        >>> kl_div_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), reduction='none')
        tensor([0.1109])
    """
    name = kl_div_loss.spec.loss
    x = check_logits(name, pred, min_dim=2)
    check_tensor(name, 'target', target)
    t = check_target_like(name, x, target)
    logp = F.log_softmax(x / temperature, dim=1)
    if target_logits:
        logq = F.log_softmax(t / temperature, dim=1)
        kl = (logq.exp() * (logq - logp)).sum(1)
    else:
        kl = (torch.xlogy(t, t) - t * logp).sum(1)
    return finish(name, kl * temperature ** 2, pred, weight, reduction, avg_factor)


def _class_balance(name: str, x: Tensor, labels: Tensor, class_counts, beta: Optional[float]) -> Tensor:
    """Per-class weights: N/(C n_c) from the batch, or effective-number weights normalised to sum to C."""
    num_classes = x.shape[1]
    if class_counts is None:
        if beta is not None:
            raise LossValueError(f'{name}: `beta` expected to come with `class_counts`, got class_counts=None')
        counts = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
        counts.scatter_add_(0, labels.reshape(-1), torch.ones_like(labels.reshape(-1), dtype=x.dtype))
        return labels.numel() / (num_classes * counts.clamp_min(1.0))
    counts = per_class(name, 'class_counts', class_counts, x, num_classes)
    check_values(name, 'class_counts', counts > 0, 'positive counts')
    if beta is None:  # the beta -> 1 limit: inverse frequency
        inverse = 1.0 / counts
    else:
        inverse = (1.0 - beta) / (1.0 - beta ** counts)
    return inverse * (num_classes / inverse.sum())


@declare('BalancedCrossEntropyLoss', beta=Range(low=0.0, high=1.0, high_open=True))
def balanced_cross_entropy_loss(pred: Tensor, target: Tensor, *, use_sigmoid: bool = True, class_counts=None,
                                beta: Optional[float] = None, weight: Optional[Tensor] = None,
                                reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Class-balanced cross-entropy (Xie & Tu 2015, HED; Cui et al. 2019).

    Binary (``use_sigmoid=True``, HED: Xie & Tu, 2015): logits and targets in ``[0, 1]`` of the
    same shape; positives are weighted by the batch's negative fraction and negatives by its
    positive fraction (:math:`N_\pm` summed over the whole batch, soft targets counted fractionally):

    .. math:: \ell = -\frac{N_-}{N}\, t \log p - \frac{N_+}{N} (1 - t) \log(1 - p)

    so a 50/50 batch gives half the BCE. ``'none'`` gives ``pred``'s shape.

    Multi-class (``use_sigmoid=False``): logits (N, C, ...) and integer labels (N, ...);
    :math:`\ell = w_y \cdot \mathrm{CE}` with the batch's inverse class frequency
    :math:`w_c = N / (C\, n_c)` (a uniform batch gives plain CE), or, given ``class_counts``, the
    class-balanced weights of Cui et al. (2019), :math:`w_c \propto (1-\beta)/(1-\beta^{n_c})`
    (inverse frequency when ``beta`` is None), normalised to sum to :math:`C`. ``'none'`` gives
    ``(N, ...)``. The weights are constants (no gradient flows through them).

    Example:
        >>> balanced_cross_entropy_loss(torch.zeros(4), torch.tensor([1.0, 0.0, 0.0, 0.0]), reduction='none')
        tensor([0.5199, 0.1733, 0.1733, 0.1733])
    """
    name = balanced_cross_entropy_loss.spec.loss
    x = check_logits(name, pred, min_dim=0 if use_sigmoid else 2)
    if use_sigmoid:
        if class_counts is not None or beta is not None:
            raise LossValueError(f'{name}: `class_counts`/`beta` expected only with use_sigmoid=False, '
                             f'got class_counts={class_counts!r}, beta={beta!r}')
        t = check_target_like(name, x, target)
        n = max(t.numel(), 1)
        n_pos = t.detach().sum()
        loss = (n - n_pos) / n * t * F.softplus(-x) + n_pos / n * (1.0 - t) * F.softplus(x)
    else:
        check_class_labels(name, x, target, x.shape[1] - 1)
        class_w = _class_balance(name, x, target, class_counts, beta)
        loss = -gather_class(F.log_softmax(x, dim=1), target) * class_w[target]
    return finish(name, loss, pred, weight, reduction, avg_factor)


# --- registered modules ---------------------------------------------------------------------------

@register_loss
class CrossEntropyLoss(ClassificationLoss):
    """Cross-entropy module, a drop-in for mmdet's ``CrossEntropyLoss``; see :func:`cross_entropy_loss`.

    ``forward(cls_score, label, weight, avg_factor, reduction_override, ignore_index)`` is mmdet's:
    the same names in the same order, a per-call ``ignore_index`` (None keeps the configured one),
    and with ``use_mask=True`` the third positional argument is the RoIs' class labels (mmdet's
    mask heads pass them there). ``cls_score`` is :func:`cross_entropy_loss`'s ``pred``, ``label``
    its ``target``.

    Differences from mmdet: with ``use_mask=True`` the reduced loss is a 0-d tensor (mmdet's has
    shape ``(1,)``) and every reduction and ``avg_factor`` are accepted (mmdet asserts ``'mean'``
    without ``avg_factor``); ``label_smoothing`` and probability targets are additions.
    """
    loss_fn = staticmethod(cross_entropy_loss)
    positional = ('use_sigmoid', 'use_mask', 'reduction', 'class_weight', 'ignore_index', 'loss_weight',
                  'avg_non_ignore')
    inputs = 'pred: (N, C, ...) logits; target: (N, ...) int labels or (N, C, ...) soft targets'
    reference = 'mmdet CrossEntropyLoss, torch cross_entropy'

    def forward(self, cls_score: Tensor, label: Tensor, weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None, reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None, **kwargs) -> Tensor:
        if ignore_index is not None:
            kwargs['ignore_index'] = ignore_index
        if self.use_mask and weight is not None:
            kwargs['label'], weight = weight, None  # mmdet mask heads: loss(mask_pred, mask_target, labels)
        return super().forward(cls_score, label, weight, avg_factor, reduction_override, **kwargs)


@register_loss
class BCELoss(ClassificationLoss):
    """Binary cross-entropy module; see :func:`bce_loss`."""
    loss_fn = staticmethod(bce_loss)
    inputs = 'pred: logits or probabilities; target: same shape in [0, 1]'
    reference = 'torch binary_cross_entropy(_with_logits)'


@register_loss
class NLLLoss(ClassificationLoss):
    """Negative log-likelihood module; see :func:`nll_loss`."""
    loss_fn = staticmethod(nll_loss)
    inputs = 'pred: (N, C, ...) log-probabilities; target: (N, ...) int labels'
    reference = 'torch nll_loss'


@register_loss
class KLDivLoss(ClassificationLoss):
    """Distillation KL-divergence module; see :func:`kl_div_loss`."""
    loss_fn = staticmethod(kl_div_loss)
    inputs = 'pred: (N, C) student logits; target: (N, C) teacher logits or probabilities'
    reference = 'torch kl_div; mmdet KnowledgeDistillationKLDivLoss x C'


@register_loss
class BalancedCrossEntropyLoss(ClassificationLoss):
    """Class-balanced cross-entropy module; see :func:`balanced_cross_entropy_loss`."""
    loss_fn = staticmethod(balanced_cross_entropy_loss)
    inputs = 'pred: logits; target: binary masks or int labels'
    reference = 'BCE / CE identities'
