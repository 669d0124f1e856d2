r"""Long-tail and large-vocabulary classification losses, with the RoI-head protocol mmdet reads from
them: SeesawLoss and EQLV2Loss (LVIS), CrossEntropyCustomLoss and FocalCustomLoss (V3Det).

The head protocol. mmdet's bbox heads (``BBoxHead`` and its subclasses, the cascade RoI head, the
dense heads) look at their ``loss_cls`` for:

* ``custom_cls_channels``: the classifier has ``get_cls_channels(num_classes)`` outputs (else
  ``num_classes + 1``), and ``predict_by_feat`` scores boxes with ``get_activation(cls_score)``
  (else a softmax);
* ``custom_activation``: the training accuracy is the dict ``get_accuracy(cls_score, labels)``
  merged into the losses (else ``acc``), and ``refine_bboxes`` (cascade) activates with
  ``get_activation``;
* ``custom_accuracy``: the dense heads' version of the accuracy switch.

SeesawLoss, CrossEntropyCustomLoss and FocalCustomLoss set all three, as mmdet's do. mmdet's
EQLV2Loss sets none of them (it has ``get_channel_num`` and ``get_activation``, which no mmdet
head calls), so mmdet's heads give it ``num_classes + 1`` channels, softmax scores and the plain
``acc``; :class:`EQLV2Loss` keeps the three flags False so that a head built with it behaves as
with mmdet's, and offers the same methods (plus ``get_cls_channels``/``get_accuracy``) for code
that calls them.

State. SeesawLoss accumulates per-class sample counts (buffer ``cum_samples``, ``num_classes + 1``
entries, the last one the background) and EQLV2Loss per-class positive and negative gradient
magnitudes (buffers ``pos_grad``, ``neg_grad`` and their ratio ``pos_neg``). The buffers have
mmdet's names, shapes and dtype (float32), so checkpoints load both ways. They are updated by
every call in training mode (mmdet updates on every call; its heads call the loss in training
only), and frozen in eval mode: an eval-mode call uses them as they are. Under
``torch.distributed`` each call's increments are summed over the ranks (one ``all_reduce``)
before they are added, so every rank holds the statistics of the global batch; as with
``SyncBatchNorm``, every rank must call the loss in every training step, and a rank with an
empty batch (or only zero weights) still joins, adding nothing. Samples of zero weight add
nothing to the statistics (mmdet's RoI heads pass unit weights, where this is mmdet's count).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.errors import LossValueError
from ...core.hparams import (NON_NEGATIVE, OPTIONAL_INT, POSITIVE, POSITIVE_INT, REQUIRED, UNIT_INTERVAL, Choice,
                             Range, declare)
from ...core.inputs import check_same_device, check_tensor
from ...core.reduction import AvgFactor, adapt_weight, count_avg_factor
from ...kernels import elementwise as fused, use_fused
from ...registry import register_loss
from ..base import StatefulLoss, distributed, sum_over_ranks
from ._common import (SIGMOID_ONLY, ClassificationLoss, bce, check_class_labels, check_logits, class_mask, finish,
                      gather_class)
from .cross_entropy import _check_ce_modes, _mask_ce, _sigmoid_ce, _softmax_ce, fused_softmax_ce
from .focal import _flattened_weight
from .. import probes

__all__ = [
    'seesaw_loss', 'eqlv2_loss', 'cross_entropy_custom_loss', 'focal_custom_loss',
    'SeesawLoss', 'EQLV2Loss', 'CrossEntropyCustomLoss', 'FocalCustomLoss',
]

#: the keys of SeesawLoss's dict result (``return_dict=True``), in mmdet's order
SEESAW_PARTS = ('loss_cls_objectness', 'loss_cls_classes')
#: EQLv2's initial positive/negative gradient ratio: high, so that every class weight starts at 1
EQLV2_INITIAL_RATIO = 100.0
#: EQLv2's guard in ``pos_grad / (neg_grad + eps)`` (mmdet's)
EQLV2_EPS = 1e-10


def _check_state(name: str, arg: str, t, length: int, x: Tensor) -> Tensor:
    """A float statistics tensor of ``length`` entries on ``pred``'s device."""
    check_tensor(name, arg, t)
    if tuple(t.shape) != (length,):
        raise LossValueError(f'{name}: `{arg}` expected shape ({length},), got {tuple(t.shape)}')
    check_same_device(name, x, t, ('pred', arg))
    return t


def _check_width(name: str, x: Tensor, width: int, what: str) -> None:
    if x.dim() != 2 or x.shape[1] != width:
        raise LossValueError(f'{name}: `pred` expected shape (N, {width}) ({what}), got {tuple(x.shape)}')


def _sample_weight(name: str, weight: Optional[Tensor], x: Tensor) -> Optional[Tensor]:
    """A per-sample weight checked against the ``(N,)`` per-sample loss, as an ``(N,)`` tensor."""
    if weight is None:
        return None
    per_sample = x.new_empty(()).expand(x.shape[0])  # a view: the shape and device, no memory
    return adapt_weight(name, weight, per_sample).to(x.dtype).expand(x.shape[0])


def _accuracy(scores: Tensor, labels: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """mmdet's top-1 ``accuracy`` in percent, over the rows where ``valid`` (all rows when None),
    without boolean indexing (no host sync): shape ``(1,)``, 0 for no rows (a 0-d zero when
    ``scores`` has no rows, as mmdet)."""
    if scores.shape[0] == 0:
        return scores.new_tensor(0.0)
    correct = scores.argmax(-1) == labels
    if valid is None:
        return correct.float().sum(0, keepdim=True) * (100.0 / scores.shape[0])
    return (correct & valid).float().sum(0, keepdim=True) * 100.0 / valid.sum().clamp(min=1)


# --- Seesaw ---------------------------------------------------------------------------------------

def _seesaw_log_weights(cls: Tensor, labels: Tensor, cum: Tensor, p: float, q: float, eps: float) -> Optional[Tensor]:
    """``log`` of Seesaw's factors (N, C), without gradient; 0 at each row's own label."""
    log_w = None
    with torch.no_grad():
        if p > 0:  # mitigation: (n_j / n_y)^p where class j has fewer samples than the label y
            log_n = cum.clamp(min=1).log().to(cls.dtype)
            log_w = (log_n.unsqueeze(0) - log_n[labels].unsqueeze(1)).clamp_(max=0.0).mul_(p)
        if q > 0:  # compensation: (s_j / max(s_y, eps))^q where class j scores above the label
            log_s = F.log_softmax(cls.detach(), dim=1)
            floor = gather_class(log_s, labels).clamp(min=math.log(eps)).unsqueeze(1)
            comp = log_s.sub_(floor).clamp_(min=0.0).mul_(q)
            log_w = comp if log_w is None else log_w.add_(comp)
    return log_w


@declare('SeesawLoss', use_sigmoid=Choice(False), p=NON_NEGATIVE, q=NON_NEGATIVE, num_classes=POSITIVE_INT,
         eps=POSITIVE)
def seesaw_loss(pred: Tensor, target: Tensor, cum_samples: Optional[Tensor] = None, training: bool = False, *,
                use_sigmoid: bool = False, p: float = 0.8, q: float = 2.0, num_classes: int = 1203,
                eps: float = 1e-2, return_dict: bool = True, weight: Optional[Tensor] = None,
                reduction: str = 'mean', avg_factor: AvgFactor = None) -> Union[Tensor, Dict[str, Tensor]]:
    r"""Seesaw loss (Wang et al., 2021, "Seesaw Loss for Long-Tailed Instance Segmentation").

    ``pred`` is ``(N, C + 2)``: ``C`` class logits, then an objectness pair (object, background);
    ``target`` is labels ``(N,)`` in ``[0, C]`` (``C`` = background). Two parts:

    * objectness: the cross-entropy of the pair against "is background", over every sample;
    * classes, over the positive samples (label < C): a cross-entropy whose other-class logits
      are shifted by the log of the Seesaw factor,

    .. math::
        \ell = -\log \frac{e^{z_y}}{e^{z_y} + \sum_{j \ne y} S_{yj}\, e^{z_j}},\quad
        S_{yj} = \min\Big(1, \frac{N_j}{N_y}\Big)^p
                 \max\Big(1, \frac{\sigma_j}{\max(\sigma_y, \epsilon)}\Big)^q

    with :math:`N` the accumulated sample counts (``cum_samples``, floored at 1), :math:`\sigma`
    the softmax of the detached class logits. The mitigation factor (``p``) lowers the penalty a
    frequent class's sample puts on rarer classes; the compensation factor (``q``) restores it for
    classes the sample is misclassified as. ``S`` carries no gradient.

    ``cum_samples``: the ``(C + 1,)`` counts (:class:`SeesawLoss`'s buffer); None means no sample
    seen yet (no mitigation). With ``training=True`` this batch's labels are first added to it in
    place (summed over ranks under ``torch.distributed``; samples of zero ``weight`` add nothing),
    as mmdet does on every call.

    Reductions as mmdet: ``weight`` is per sample; ``'mean'`` without ``avg_factor`` averages the
    objectness part over all samples and the classes part over the positives; with ``avg_factor``
    both are ``sum / avg_factor``. ``'none'`` gives ``(N,)`` for both parts, the classes part 0 on
    the background samples (mmdet gives it only for the positives). ``return_dict=True`` returns
    ``{'loss_cls_objectness': ..., 'loss_cls_classes': ...}``, else their sum. Computed in float32
    for half-precision inputs, in logit space (log-softmax): logits of :math:`\pm 10^4` stay finite.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 1.0, -1.0, 1.0]])  # C = 2
        >>> out = seesaw_loss(logits, torch.tensor([0, 2]), num_classes=2)
        >>> {k: round(float(v), 4) for k, v in out.items()}
        {'loss_cls_objectness': 0.1269, 'loss_cls_classes': 0.1269}
    """
    name = seesaw_loss.spec.loss
    x = check_logits(name, pred, min_dim=2)
    _check_width(name, x, num_classes + 2, f'{num_classes} class logits, then the objectness pair')
    labels = check_class_labels(name, x, target, num_classes)
    sw = _sample_weight(name, weight, x)
    cum = None
    if cum_samples is not None:
        cum = _check_state(name, 'cum_samples', cum_samples, num_classes + 1, x)
        if training:
            with torch.no_grad():
                ones = torch.ones_like(labels, dtype=cum.dtype) if sw is None else (sw > 0).to(cum.dtype)
                cum += sum_over_ranks(torch.zeros_like(cum).index_add_(0, labels, ones))
    pos = labels < num_classes
    objectness = F.cross_entropy(x[:, num_classes:], (~pos).long(), reduction='none')

    y = labels.clamp(max=num_classes - 1)  # the background rows: any class, masked out below
    cls = x[:, :num_classes]
    log_w = _seesaw_log_weights(cls, y, x.new_zeros(num_classes) if cum is None else cum[:num_classes], p, q, eps)
    z = cls if log_w is None else cls + log_w
    classes = F.cross_entropy(z, y, reduction='none').masked_fill(~pos, 0.0)

    # mmdet: the classes part is a mean over the positives
    cls_avg = count_avg_factor(reduction, pos.sum().to(x.dtype), avg_factor)
    parts = (finish(name, objectness, pred, weight, reduction, avg_factor),
             finish(name, classes, pred, weight, reduction, cls_avg))
    return dict(zip(SEESAW_PARTS, parts)) if return_dict else parts[0] + parts[1]


# --- EQLv2 ----------------------------------------------------------------------------------------

def _check_class_weight(name: str, *, class_weight, **_) -> None:
    if class_weight is not None:
        raise LossValueError(f'{name}: `class_weight` expected None (mmdet\'s EQLV2Loss stores it but never applies '
                             f'it, and mmloss_ext refuses a value it would ignore), got {class_weight!r}')


def _eqlv2_add(pos_grad: Tensor, neg_grad: Tensor, pos_neg: Tensor, increments: Tensor) -> None:
    """Add the ``(2, C)`` increments (summed over ranks first) and refresh the ratio, in place."""
    if distributed():
        # in the buffers' dtype: every rank must reduce the same one, whatever its input's (or none)
        increments = sum_over_ranks(increments.to(pos_grad.dtype))
    pos_grad += increments[0]
    neg_grad += increments[1]
    pos_neg.copy_(pos_grad / (neg_grad + EQLV2_EPS))


@declare('EQLV2Loss', use_sigmoid=SIGMOID_ONLY, num_classes=POSITIVE_INT, mu=NON_NEGATIVE, alpha=NON_NEGATIVE,
         gamma=Range(low=0, integer=True), relation=_check_class_weight)
def eqlv2_loss(pred: Tensor, target: Tensor, pos_grad: Optional[Tensor] = None, neg_grad: Optional[Tensor] = None,
               pos_neg: Optional[Tensor] = None, training: bool = False, *, use_sigmoid: bool = True,
               class_weight: Optional[Sequence[float]] = None, num_classes: int = 1203, use_distributed: bool = False,
               mu: float = 0.8, alpha: float = 4.0, gamma: int = 12, vis_grad: bool = False,
               test_with_obj: bool = True, weight: Optional[Tensor] = None, reduction: str = 'mean',
               avg_factor: AvgFactor = None) -> Tensor:
    r"""Equalization loss v2 (Tan et al., 2021, "Equalization Loss v2: A New Gradient Balance
    Approach for Long-tailed Object Detection").

    Sigmoid logits ``(N, C + 1)`` (the last one the background / objectness), labels ``(N,)`` in
    ``[0, C]`` one-hot over the ``C + 1`` columns. Per sample, with :math:`r_j` the accumulated
    ratio of positive to negative gradient of class :math:`j` (``pos_neg``):

    .. math::
        \ell = \sum_j w_j\, \mathrm{BCE}(x_j, t_j),\quad
        w_j = t_j\, (1 + \alpha (1 - f_j)) + (1 - t_j) f_j,\quad
        f_j = \frac{1}{1 + e^{-\gamma (r_j - \mu)}}

    (:math:`f = 1` for the background column). Classes whose positives have been outweighed by
    negatives (:math:`r_j < \mu`) get their negative gradients down-weighted and positives up-weighted.

    State: ``pos_grad``, ``neg_grad`` and ``pos_neg`` (each ``(C,)``, :class:`EQLV2Loss`'s
    buffers) or none of them (the initial state, :math:`r = 100`: every weight 1). With
    ``training=True``, after the loss is computed, the gradient magnitudes :math:`|\partial
    \mathrm{BCE} / \partial x|` times :math:`w` (times the sample ``weight``) of this batch are
    added, split into positives and negatives (summed over ranks under ``torch.distributed``),
    and ``pos_neg`` becomes ``pos_grad / (neg_grad + 1e-10)``.

    ``'none'`` gives ``(N,)``; ``'mean'`` is the sum over the batch divided by ``N``, which is the
    value of mmdet's module (it ignores ``weight``, ``avg_factor`` and the reduction; mmloss_ext
    applies them). ``class_weight`` must be None (mmdet stores and ignores it); ``use_distributed``
    is accepted for config compatibility: the statistics are summed over ranks whenever
    ``torch.distributed`` is initialised (mmdet's False keeps per-rank statistics, which a rank-0
    checkpoint cannot restore). ``vis_grad`` has no effect (nor in mmdet); ``test_with_obj`` is for
    :meth:`EQLV2Loss.get_activation`.

    Example:
        >>> eqlv2_loss(torch.tensor([[2.0, -1.0, -2.0]]), torch.tensor([0]), num_classes=2)  # initial: plain BCE sum
        tensor(0.5671)
    """
    name = eqlv2_loss.spec.loss
    x = check_logits(name, pred, min_dim=2)
    _check_width(name, x, num_classes + 1, f'{num_classes} class logits, then the background')
    labels = check_class_labels(name, x, target, num_classes)
    sw = _sample_weight(name, weight, x)
    state = (pos_grad, neg_grad, pos_neg)
    if any(s is not None for s in state):
        for arg, s in zip(('pos_grad', 'neg_grad', 'pos_neg'), state):
            if s is None:
                raise LossValueError(f'{name}: `{arg}` expected a tensor with the other statistics, got None')
            _check_state(name, arg, s, num_classes, x)
        ratio = pos_neg
    else:
        ratio = x.new_full((num_classes,), EQLV2_INITIAL_RATIO, dtype=torch.float32)
    with torch.no_grad():
        neg_w = torch.cat([1.0 / (1.0 + torch.exp(-gamma * (ratio - mu))), ratio.new_ones(1)]).to(x.dtype)
        pos_w = 1.0 + alpha * (1.0 - neg_w)
        t = class_mask(labels, num_classes + 1)
        w = torch.where(t, pos_w, neg_w)
    loss = (F.binary_cross_entropy_with_logits(x, t.to(x.dtype), reduction='none') * w).sum(1)
    if training and pos_grad is not None:
        with torch.no_grad():
            prob = torch.sigmoid(x)
            neg = prob.masked_fill(t, 0.0)  # |d BCE / d x| of a negative is p, of a positive 1 - p
            pos = 1.0 - gather_class(prob, labels)
            if sw is None:
                neg = neg.sum(0)
            else:
                neg = sw @ neg
                pos = pos * sw
            pos = torch.zeros_like(neg).index_add_(0, labels, pos) * pos_w
            _eqlv2_add(pos_grad, neg_grad, pos_neg, torch.stack([pos, neg * neg_w])[:, :num_classes])
    return finish(name, loss, pred, weight, reduction, avg_factor)


# --- V3Det's custom cross-entropy and focal loss --------------------------------------------------

@declare('CrossEntropyCustomLoss', probe=probes.logits, num_classes=POSITIVE_INT, ignore_index=OPTIONAL_INT, relation=_check_ce_modes)
def cross_entropy_custom_loss(pred: Tensor, target: Tensor, label: Optional[Tensor] = None, *,
                              use_sigmoid: bool = False, use_mask: bool = False, num_classes: int = REQUIRED,
                              class_weight: Optional[Sequence[float]] = None, ignore_index: Optional[int] = None,
                              avg_non_ignore: bool = False, impl: str = 'auto', weight: Optional[Tensor] = None,
                              reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Cross-entropy for a classifier of a custom width (Wang et al., 2023, "V3Det: Vast
    Vocabulary Visual Detection Dataset"): mmdet's ``CrossEntropyCustomLoss``.

    The loss is :func:`~mmloss_ext.losses.classification.cross_entropy.cross_entropy_loss`'s, for
    ``num_classes`` (required) classes: softmax over ``(N, C + 1)`` logits (the last one the
    background) with labels in ``[0, C]``,

    .. math:: \ell = -w_y \log \operatorname{softmax}(x)_y

    or, with ``use_sigmoid=True``, the binary cross-entropy of ``(N, C)`` logits against the
    one-hot labels (label ``C``, the background, an all-zero row); ``use_mask=True`` is the mask
    form (``label``: the RoIs' classes). ``class_weight``, ``ignore_index``, ``avg_non_ignore`` and
    ``impl`` as there; the classifier width must match ``num_classes``. What differs from
    ``CrossEntropyLoss`` is the head protocol of :class:`CrossEntropyCustomLoss`.

    Example:
        >>> cross_entropy_custom_loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]), num_classes=2)
        tensor(0.2395)
    """
    name = cross_entropy_custom_loss.spec.loss
    x = check_logits(name, pred, min_dim=2)
    if not use_mask:
        width = num_classes if use_sigmoid else num_classes + 1
        _check_width(name, x, width, f'{num_classes} class logits' + ('' if use_sigmoid else ', then the background'))
    check_tensor(name, 'target', target, floating=False)
    if use_fused(name, impl, x, op='cross_entropy',
                 supported=not (use_sigmoid or use_mask or target.is_floating_point()), others=(weight, class_weight)):
        return fused_softmax_ce(name, x, target, pred.dtype, class_weight, ignore_index, avg_non_ignore, weight,
                                reduction, avg_factor)
    if use_mask:
        loss, count = _mask_ce(name, x, target, label, class_weight, 0.0)
    elif use_sigmoid:
        loss, count = _sigmoid_ce(name, x, target, class_weight, ignore_index, 0.0)
    else:
        loss, count = _softmax_ce(name, x, target, class_weight, ignore_index, 0.0)
    if avg_non_ignore:
        avg_factor = count_avg_factor(reduction, count, avg_factor)
    return finish(name, loss, pred, weight, reduction, avg_factor)


@declare('FocalCustomLoss', probe=probes.logits, use_sigmoid=SIGMOID_ONLY, num_classes=POSITIVE_INT, gamma=NON_NEGATIVE,
         alpha=UNIT_INTERVAL)
def focal_custom_loss(pred: Tensor, target: Tensor, *, use_sigmoid: bool = True, num_classes: int = REQUIRED,
                      gamma: float = 2.0, alpha: float = 0.25, activated: bool = False, impl: str = 'auto',
                      weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Sigmoid focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection") for a
    classifier of ``num_classes`` outputs, V3Det's FCOS: mmdet's ``FocalCustomLoss``.

    Logits ``(N, C)`` with ``C`` = ``num_classes`` (required) and labels ``(N,)`` in ``[0, C]``
    (``C`` = background, an all-zero row), elementwise with :math:`p = \sigma(x)`:

    .. math:: \ell = \mathrm{BCE}(x, t)\, \big(\alpha t + (1-\alpha)(1-t)\big)\, \big(p(1-t) + (1-p)t\big)^\gamma

    as :func:`~mmloss_ext.losses.classification.focal.focal_loss`; ``'none'`` gives ``(N, C)``,
    an ``(N,)`` weight broadcasts over the classes. ``activated=True`` takes probabilities, as
    mmdet documents it (mmdet 3.3's module ignores the flag and reads logits). ``impl`` as
    ``focal_loss`` (fused for logits).

    Example:
        >>> focal_custom_loss(torch.tensor([[2.0, -1.0], [0.0, 3.0]]), torch.tensor([0, 2]), num_classes=2,
        ...                   reduction='none')
        tensor([[4.5089e-04, 1.6994e-02],
                [1.2997e-01, 2.0747e+00]])
    """
    name = focal_custom_loss.spec.loss
    x = check_logits(name, pred, min_dim=2)
    _check_width(name, x, num_classes, f'{num_classes} class logits')
    labels = check_class_labels(name, x, target, num_classes)
    if use_fused(name, impl, x, op='elementwise', supported=not activated, others=(weight,)):
        return fused.sigmoid_family(name, fused.FOCAL, (alpha, gamma), x, pred.dtype, target=None, labels=labels,
                                    weight=_flattened_weight(weight, x), reduction=reduction, avg_factor=avg_factor)
    t = class_mask(labels, num_classes).to(x.dtype)
    loss = bce(x, t, activated=activated) * ((1.0 - alpha) + (2.0 * alpha - 1.0) * t)
    if gamma:
        prob = x if activated else torch.sigmoid(x)
        loss = loss * (prob + t * (1.0 - 2.0 * prob)).pow(gamma)
    return finish(name, loss, pred, _flattened_weight(weight, loss), reduction, avg_factor)


# --- registered modules ---------------------------------------------------------------------------

class _CustomHead:
    """The head protocol for a loss whose classes are the first ``num_classes`` columns of its scores."""
    num_classes: int
    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    def _check_num_classes(self, num_classes) -> None:
        if num_classes != self.num_classes:
            raise LossValueError(f'{type(self).__name__}: `num_classes` expected the loss\'s {self.num_classes} '
                                 f'(the head and its loss_cls must agree), got {num_classes!r}')

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """``{'acc_classes': top-1 accuracy (%) of the class scores over the positive samples}``."""
        return {'acc_classes': _accuracy(cls_score[..., :self.num_classes], labels, labels < self.num_classes)}


@register_loss
class SeesawLoss(StatefulLoss, _CustomHead, ClassificationLoss):
    """Seesaw loss module, a drop-in for mmdet's ``SeesawLoss``; see :func:`seesaw_loss`.

    The accumulated class counts are the buffer ``cum_samples`` (see the module docstring for
    training / eval and ``torch.distributed``). ``forward`` returns a dict with the two parts when
    ``return_dict`` (each times ``loss_weight``), else their sum. The head protocol: ``C + 2``
    classifier channels; ``get_activation`` gives ``(N, C + 1)`` scores, the class softmax times
    the object probability, then the background probability; ``get_accuracy`` gives
    ``acc_objectness`` and ``acc_classes``.
    """
    loss_fn = staticmethod(seesaw_loss)
    positional = ('use_sigmoid', 'p', 'q', 'num_classes', 'eps', 'reduction', 'loss_weight', 'return_dict')
    inputs = 'pred: (N, C + 2) logits (C classes, then objectness); target: (N,) labels in [0, C]'
    reference = 'mmdet SeesawLoss'

    def initial_state(self) -> Dict[str, Tensor]:
        return {'cum_samples': torch.zeros(self.num_classes + 1, dtype=torch.float32)}

    def forward(self, cls_score: Tensor, labels=None, label_weights: Optional[Tensor] = None,
                avg_factor: AvgFactor = None, reduction_override: Optional[str] = None,
                **kwargs) -> Union[Tensor, Dict[str, Tensor]]:
        label_weights = kwargs.pop('weight', label_weights)  # the keyword every other loss takes
        return super().forward(cls_score, labels, label_weights, avg_factor, reduction_override, **kwargs)

    def parts(self) -> Tuple[str, ...]:
        return SEESAW_PARTS if self.return_dict else ()

    def _split(self, cls_score: Tensor) -> Tuple[Tensor, Tensor]:
        if cls_score.shape[-1] != self.num_classes + 2:
            raise LossValueError(f'{type(self).__name__}: `cls_score` expected {self.num_classes + 2} scores on the last dim '
                                 f'({self.num_classes} classes, then objectness), got shape {tuple(cls_score.shape)}')
        return cls_score[..., :-2], cls_score[..., -2:]

    def get_cls_channels(self, num_classes: int) -> int:
        """``num_classes + 2``: the class logits, then the objectness pair."""
        self._check_num_classes(num_classes)
        return num_classes + 2

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """``(..., C + 1)`` scores: ``softmax(classes) * P(object)``, then ``P(background)``."""
        classes, objectness = self._split(cls_score)
        obj = F.softmax(objectness, dim=-1)
        return torch.cat([F.softmax(classes, dim=-1) * obj[..., :1], obj[..., 1:]], dim=-1)

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """``acc_objectness`` (object vs background, every sample) and ``acc_classes`` (positives)."""
        classes, objectness = self._split(cls_score)
        background = labels == self.num_classes
        return {'acc_objectness': _accuracy(objectness, background.long()),
                'acc_classes': _accuracy(classes, labels, ~background)}


@register_loss
class EQLV2Loss(StatefulLoss, ClassificationLoss):
    """Equalization loss v2 module, a drop-in for mmdet's ``EQLV2Loss``; see :func:`eqlv2_loss`.

    The gradient statistics are the buffers ``pos_grad``, ``neg_grad`` and ``pos_neg`` (see the
    module docstring for training / eval and ``torch.distributed``). Like mmdet's, it declares no
    custom head protocol (the three ``custom_*`` flags are False: heads use ``num_classes + 1``
    channels, a softmax and ``acc``); ``get_channel_num`` / ``get_cls_channels`` and
    ``get_activation`` (sigmoid scores, the class scores times ``1 - P(background)`` when
    ``test_with_obj``) are there for code that calls them.
    """
    loss_fn = staticmethod(eqlv2_loss)
    positional = ('use_sigmoid', 'reduction', 'class_weight', 'loss_weight', 'num_classes', 'use_distributed', 'mu',
                  'alpha', 'gamma', 'vis_grad', 'test_with_obj')
    inputs = 'pred: (N, C + 1) logits (C classes, then background); target: (N,) labels in [0, C]'
    reference = 'mmdet EQLV2Loss'
    custom_cls_channels = False
    custom_activation = False
    custom_accuracy = False

    def initial_state(self) -> Dict[str, Tensor]:
        return {'pos_grad': torch.zeros(self.num_classes), 'neg_grad': torch.zeros(self.num_classes),
                'pos_neg': torch.full((self.num_classes,), EQLV2_INITIAL_RATIO)}

    def forward(self, cls_score: Tensor, label=None, weight: Optional[Tensor] = None, avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None, **kwargs) -> Tensor:
        """BaseLoss's call, under mmdet's argument names."""
        return super().forward(cls_score, label, weight, avg_factor, reduction_override, **kwargs)

    def get_channel_num(self, num_classes: int) -> int:
        """``num_classes + 1`` (mmdet's name for :meth:`get_cls_channels`)."""
        return num_classes + 1

    def get_cls_channels(self, num_classes: int) -> int:
        """``num_classes + 1``: the class logits, then the background."""
        return num_classes + 1

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Sigmoid scores ``(N, C + 1)``; with ``test_with_obj`` the class scores are multiplied by
        ``1 - sigmoid(background logit)``."""
        scores = torch.sigmoid(cls_score)
        if not self.test_with_obj:
            return scores
        return torch.cat([scores[..., :-1] * (1.0 - scores[..., -1:]), scores[..., -1:]], dim=-1)

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """``{'acc': top-1 accuracy (%)}``, what mmdet's heads compute for this loss."""
        return {'acc': _accuracy(cls_score, labels)}


@register_loss
class CrossEntropyCustomLoss(_CustomHead, ClassificationLoss):
    """Custom-width cross-entropy module, a drop-in for mmdet's ``CrossEntropyCustomLoss``; see
    :func:`cross_entropy_custom_loss`.

    ``forward`` as ``CrossEntropyLoss``'s (a per-call ``ignore_index``; with ``use_mask=True`` the
    third positional argument is the RoIs' labels). The head protocol: ``C + 1`` classifier
    channels (``C`` with ``use_sigmoid``); ``get_activation`` gives ``(N, C + 1)`` scores (softmax;
    or the class sigmoids, then ``clamp(1 - sum, 0, 1)``); ``get_accuracy`` gives ``acc_classes``.
    """
    loss_fn = staticmethod(cross_entropy_custom_loss)
    positional = ('use_sigmoid', 'use_mask', 'reduction', 'num_classes', 'class_weight', 'ignore_index',
                  'loss_weight', 'avg_non_ignore')
    inputs = 'pred: (N, C + 1) logits ((N, C) with use_sigmoid); target: (N,) labels in [0, C]'
    reference = 'mmdet CrossEntropyCustomLoss'

    def forward(self, cls_score: Tensor, label=None, weight: Optional[Tensor] = None, avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None, ignore_index: Optional[int] = None, **kwargs) -> Tensor:
        if ignore_index is not None:
            kwargs['ignore_index'] = ignore_index
        if self.use_mask and weight is not None and 'label' not in kwargs:
            kwargs['label'], weight = weight, None  # mmdet mask heads: loss(mask_pred, mask_target, labels)
        return super().forward(cls_score, label, weight, avg_factor, reduction_override, **kwargs)

    def get_cls_channels(self, num_classes: int) -> int:
        """``num_classes + 1`` (softmax, the last one the background), ``num_classes`` with ``use_sigmoid``."""
        self._check_num_classes(num_classes)
        return num_classes if self.use_sigmoid else num_classes + 1

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """``(N, C + 1)`` scores: the softmax over the classes and the background; with
        ``use_sigmoid`` the class sigmoids, then ``clamp(1 - their sum, 0, 1)``."""
        classes = cls_score[..., :self.num_classes]
        if not self.use_sigmoid:
            return F.softmax(torch.cat([classes, cls_score[..., -1:]], dim=-1), dim=-1)
        scores = torch.sigmoid(classes)
        return torch.cat([scores, (1.0 - scores.sum(-1, keepdim=True)).clamp(min=0.0, max=1.0)], dim=-1)


@register_loss
class FocalCustomLoss(_CustomHead, ClassificationLoss):
    """Custom-width sigmoid focal loss module, a drop-in for mmdet's ``FocalCustomLoss``; see
    :func:`focal_custom_loss`.

    The head protocol: ``C`` classifier channels; ``get_activation`` gives the ``(N, C)`` class
    sigmoids (no background column, as mmdet); ``get_accuracy`` gives ``acc_classes``.
    """
    loss_fn = staticmethod(focal_custom_loss)
    positional = ('use_sigmoid', 'num_classes', 'gamma', 'alpha', 'reduction', 'loss_weight', 'activated')
    inputs = 'pred: (N, C) logits; target: (N,) labels in [0, C]'
    reference = 'mmdet FocalCustomLoss'

    def get_cls_channels(self, num_classes: int) -> int:
        """``num_classes``: one sigmoid per class."""
        self._check_num_classes(num_classes)
        return num_classes

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """The class sigmoids ``(N, C)``."""
        return torch.sigmoid(cls_score[..., :self.num_classes])
