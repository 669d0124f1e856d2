r"""Knowledge distillation: KnowledgeDistillationKLDivLoss, mmdet's distillation loss (used by LD).

Its math is :func:`~.cross_entropy.kl_div_loss`'s -- KL(teacher ‖ student) of the softened
distributions, times :math:`T^2` -- averaged over the classes instead of summed, so
``knowledge_distillation_kl_div_loss(x, t, T=T) == kl_div_loss(x, t, temperature=T) / C`` (with the
teacher detached by default). The functional below computes it exactly that way.
"""
from __future__ import annotations

from typing import Optional

import torch  # noqa: F401  (the doctests)
from torch import Tensor

from ...core.hparams import POSITIVE, declare
from ...core.inputs import check_tensor
from ...core.reduction import AvgFactor
from ...registry import register_loss
from ._common import ClassificationLoss, check_logits, check_target_like, finish
from .cross_entropy import kl_div_loss

__all__ = ['knowledge_distillation_kl_div_loss', 'KnowledgeDistillationKLDivLoss']


@declare('KnowledgeDistillationKLDivLoss', T=POSITIVE)  # mmdet asserts T >= 1; any T > 0 is valid
def knowledge_distillation_kl_div_loss(pred: Tensor, soft_label: Tensor, *, T: float = 10.0,
                                       detach_target: bool = True, weight: Optional[Tensor] = None,
                                       reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Distillation KL divergence averaged over the classes, as localization distillation uses it
    (Zheng et al., 2022, "Localization Distillation for Dense Object Detection").

    With :math:`C` classes (bins) on dim 1 and temperature :math:`T` (Hinton et al., 2015):

    .. math:: \ell = \frac{T^2}{C} \sum_c q_c (\log q_c - \log p_c),\quad
              p = \operatorname{softmax}(x/T),\ q = \operatorname{softmax}(t/T)

    ``pred`` is the student's logits ``(N, C, ...)``, ``soft_label`` the teacher's logits of the
    same shape (mmdet's name: they are softened by the same softmax, not read as probabilities).
    ``'none'`` gives ``(N, ...)``. With ``detach_target`` (default, as mmdet) no gradient flows
    into the teacher.

    This is :func:`~mmloss_ext.losses.classification.kl_div_loss` (``KLDivLoss``, which sums over
    the classes) divided by :math:`C`: ``KLDivLoss(temperature=T)`` with ``loss_weight`` divided by
    ``C`` trains the same. LD passes the box-side bins of GFL's distribution, ``(4 N, n + 1)``, with
    a per-row ``weight``.

    Example:
        >>> student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
        >>> knowledge_distillation_kl_div_loss(student, teacher, T=1.0, reduction='none')
        tensor([0.0555])
        >>> kl_div_loss(student, teacher, reduction='none') / 2
        tensor([0.0555])
    """
    name = knowledge_distillation_kl_div_loss.spec.loss
    x = check_logits(name, pred, min_dim=2)
    check_tensor(name, 'soft_label', soft_label)
    t = check_target_like(name, x, soft_label, 'soft_label')
    if detach_target:
        t = t.detach()
    # the inputs are checked above under this loss's name: kl_div_loss only computes here
    kl = kl_div_loss(x, t, temperature=T, target_logits=True, reduction='none')
    return finish(name, kl / max(x.shape[1], 1), pred, weight, reduction, avg_factor)


@register_loss
class KnowledgeDistillationKLDivLoss(ClassificationLoss):
    """Distillation KL-divergence module (LD), a drop-in for mmdet's; see
    :func:`knowledge_distillation_kl_div_loss`.

    ``forward(pred, soft_label, weight=None, avg_factor=None, reduction_override=None)`` as mmdet's;
    ``detach_target`` may also be given per call.
    """
    loss_fn = staticmethod(knowledge_distillation_kl_div_loss)
    positional = ('reduction', 'loss_weight', 'T')
    inputs = 'pred: (N, C) student logits; soft_label: (N, C) teacher logits'
    reference = 'mmdet KnowledgeDistillationKLDivLoss; KLDivLoss / C'

    def forward(self, pred: Tensor, soft_label=None, weight: Optional[Tensor] = None, avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None, **kwargs) -> Tensor:
        return super().forward(pred, soft_label, weight, avg_factor, reduction_override, **kwargs)
