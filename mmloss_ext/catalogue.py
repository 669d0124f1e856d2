"""What the code cannot say about itself: each loss's input shapes, test reference and paper.

Everything else in the catalogue (family, summary, parameters and defaults, formula) is read from
the registered classes and their functionals' docstrings, so ``docs/losses.md`` and
``python -m mmloss_ext list|show`` never drift from the code. A test fails when a registered loss
has no entry here, or an entry names no registered loss.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

from .losses.base import functional_hparams
from .registry import MODELS

FAMILIES = ('regression', 'classification', 'segmentation', 'bbox', 'image')


@dataclass(frozen=True)
class Meta:
    inputs: str
    reference: str
    paper: str = ''


_REG = 'pred, target: same shape, float'
_BOX = 'pred, target: (N, 4) decoded boxes (x1, y1, x2, y2)'
_SEG = 'pred: (N, C, H, W) or (N, H, W) logits; target: masks or int labels'
_IMG = 'pred, target: (N, C, H, W)'

META: Dict[str, Meta] = {
    # regression
    'L1Loss': Meta(_REG, 'mmdet L1Loss'),
    'MSELoss': Meta(_REG, 'mmdet MSELoss'),
    'SSELoss': Meta(_REG, 'torch mse_loss(reduction="sum")'),
    'RMSELoss': Meta(_REG, 'hand formula'),
    'SmoothL1Loss': Meta(_REG, 'mmdet SmoothL1Loss, torch smooth_l1_loss', 'Girshick 2015, Fast R-CNN'),
    'HuberLoss': Meta(_REG, 'torch huber_loss', 'Huber 1964'),
    'LogCoshLoss': Meta(_REG, 'hand formula'),
    'QuantileLoss': Meta(_REG, 'hand formula', 'Koenker & Bassett 1978'),
    'CharbonnierLoss': Meta(_REG, 'hand formula', 'Charbonnier et al. 1994'),
    'BalancedL1Loss': Meta(_REG, 'mmdet BalancedL1Loss', 'Pang et al. 2019, Libra R-CNN'),
    # classification
    'CrossEntropyLoss': Meta('pred: (N, C, ...) logits; target: (N, ...) int labels or (N, C, ...) soft targets',
                             'mmdet CrossEntropyLoss, torch cross_entropy'),
    'BCELoss': Meta('pred: logits or probabilities; target: same shape in [0, 1]', 'torch binary_cross_entropy(_with_logits)'),
    'NLLLoss': Meta('pred: (N, C, ...) log-probabilities; target: (N, ...) int labels', 'torch nll_loss'),
    'KLDivLoss': Meta('pred: (N, C) student logits; target: (N, C) teacher logits or probabilities',
                      'torch kl_div; mmdet KnowledgeDistillationKLDivLoss x C', 'Hinton et al. 2015'),
    'BalancedCrossEntropyLoss': Meta('pred: logits; target: binary masks or int labels', 'BCE / CE identities',
                                     'Xie & Tu 2015 (HED); Cui et al. 2019'),
    'FocalLoss': Meta('pred: (N, C) logits; target: (N,) labels in [0, C] or (N, C) soft targets',
                      'mmdet FocalLoss', 'Lin et al. 2017, RetinaNet'),
    'QualityFocalLoss': Meta('pred: (N, C) logits; target: (labels (N,), scores (N,))', 'mmdet QualityFocalLoss',
                             'Li et al. 2020, Generalized Focal Loss'),
    'VarifocalLoss': Meta('pred: (N, C) logits; target: (N, C) IoU-aware soft targets', 'mmdet VarifocalLoss',
                          'Zhang et al. 2021, VarifocalNet'),
    'DistributionFocalLoss': Meta('pred: (N, n+1) logits over bins; target: (N,) floats in [0, n)',
                                  'mmdet DistributionFocalLoss', 'Li et al. 2020, Generalized Focal Loss'),
    'HingeLoss': Meta('pred: (N,) or (N, C) scores; target: labels', 'torch multi_margin_loss'),
    'ZeroOneLoss': Meta('pred: (N, C) scores or (N,) logits; target: labels (no gradient)', 'hand formula'),
    # segmentation
    'DiceLoss': Meta(_SEG, 'mmdet DiceLoss, MONAI DiceLoss', 'Milletari et al. 2016, V-Net'),
    'JaccardLoss': Meta(_SEG, 'hand formula'),
    'TverskyLoss': Meta(_SEG, 'MONAI TverskyLoss', 'Salehi et al. 2017'),
    'FocalTverskyLoss': Meta(_SEG, 'hand formula', 'Abraham & Khan 2019'),
    'LovaszLoss': Meta(_SEG, 'kornia lovasz_hinge_loss / lovasz_softmax_loss', 'Berman et al. 2018'),
    # boxes
    'IoULoss': Meta(_BOX, 'mmdet IoULoss', 'Yu et al. 2016, UnitBox'),
    'BoundedIoULoss': Meta(_BOX, 'mmdet BoundedIoULoss', 'Tychsen-Smith & Petersson 2018'),
    'GIoULoss': Meta(_BOX, 'mmdet GIoULoss', 'Rezatofighi et al. 2019'),
    'DIoULoss': Meta(_BOX, 'mmdet DIoULoss', 'Zheng et al. 2020'),
    'CIoULoss': Meta(_BOX, 'mmdet CIoULoss', 'Zheng et al. 2020'),
    'EIoULoss': Meta(_BOX, 'mmdet EIoULoss (Extended-IoU)', 'Peng & Yu 2021'),
    'SIoULoss': Meta(_BOX, 'mmdet SIoULoss', 'Gevorgyan 2022'),
    'EfficientIoULoss': Meta(_BOX, 'hand formula', 'Zhang et al. 2021, Focal-EIoU'),
    'AlphaIoULoss': Meta(_BOX, 'hand formula', 'He et al. 2021, Alpha-IoU'),
    'WIoULoss': Meta(_BOX, 'hand formula (v1)', 'Tong et al. 2023, Wise-IoU'),
    'MPDIoULoss': Meta(_BOX, 'hand formula', 'Ma & Xu 2023, MPDIoU'),
    'InnerIoULoss': Meta(_BOX, 'hand formula', 'Zhang et al. 2023, Inner-IoU'),
    'FocalerIoULoss': Meta(_BOX, 'hand formula', 'Zhang & Zhang 2024, Focaler-IoU'),
    'ShapeIoULoss': Meta(_BOX, 'hand formula', 'Zhang & Zhang 2023, Shape-IoU'),
    'NWDLoss': Meta(_BOX, 'hand formula', 'Wang et al. 2021, Normalized Wasserstein Distance'),
    # image restoration
    'TVLoss': Meta('pred: (N, C, H, W) (no target)', 'kornia total_variation', 'Rudin et al. 1992'),
    'WeightedTVLoss': Meta('pred: (N, C, H, W); weight: (N, C, H, W) map (no target)', 'hand formula'),
    'PSNRLoss': Meta(_IMG, 'kornia psnr_loss'),
    'SSIMLoss': Meta(_IMG, 'kornia metrics.ssim', 'Wang et al. 2004'),
}


@dataclass(frozen=True)
class Entry:
    """One loss of the catalogue, read from the code."""
    name: str
    family: str
    summary: str
    params: Dict[str, object]
    reduction: str
    functional: str
    formula: str
    doc: str
    meta: Meta

    def config(self) -> dict:
        """A ready-to-paste config dict with every default spelled out."""
        return dict(type=f'mmloss_ext.{self.name}', **self.params, reduction=self.reduction, loss_weight=1.0)


def _formula(doc: str) -> str:
    """The first ``.. math::`` block of a docstring (both one-line and indented forms)."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'\s*\.\. math::\s*(.*)$', line)
        if not m:
            continue
        if m.group(1).strip():
            return m.group(1).strip()
        indent = len(line) - len(line.lstrip())
        body = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt.strip())
        return ' '.join(b for b in body if b)
    return ''


def entry(name: str) -> Entry:
    """The catalogue entry of a registered loss (``KeyError`` for an unknown name)."""
    cls = MODELS.module_dict[name]
    fn = cls.loss_fn
    doc = inspect.getdoc(fn) or ''
    family = fn.__module__.split('.')[2]
    reduction = inspect.signature(fn).parameters['reduction'].default
    return Entry(name=name, family=family, summary=doc.splitlines()[0] if doc else '',
                 params=functional_hparams(fn), reduction=reduction,
                 functional=f'{fn.__module__}.{fn.__name__}', formula=_formula(doc), doc=doc,
                 meta=META[name])


def entries(family: Optional[str] = None) -> List[Entry]:
    """Every registered loss, grouped by family in catalogue order."""
    import mmloss_ext.losses  # noqa: F401  (registers everything)
    out = [entry(n) for n in MODELS.module_dict]
    out.sort(key=lambda e: FAMILIES.index(e.family) if e.family in FAMILIES else len(FAMILIES))  # stable
    return [e for e in out if family is None or e.family == family]


def _fmt_params(params: Dict[str, object]) -> str:
    return ', '.join(f'{k}={v!r}' for k, v in params.items()) or '—'


def _cell(text: str) -> str:
    return text.replace('|', '\\|')


def render_markdown() -> str:
    """The text of ``docs/losses.md`` (regenerate with ``python tools/gen_docs.py``)."""
    all_entries = entries()
    out = ['# The mmloss_ext catalogue', '',
           '<!-- generated by tools/gen_docs.py from the registry and the docstrings; do not edit -->', '',
           f'{len(all_entries)} losses. In a config: `dict(type=\'mmloss_ext.<Name>\', ...)`. Every loss also '
           'accepts `reduction` (`\'none\'|\'mean\'|\'sum\'`) and `loss_weight`, and is called as '
           '`loss(pred, target, weight=None, avg_factor=None, reduction_override=None)`.', '',
           '| Name | Family | Summary | Parameters (defaults) | Inputs | Tested against | Paper |',
           '|---|---|---|---|---|---|---|']
    for e in all_entries:
        out.append(f'| [{e.name}](#{e.name.lower()}) | {e.family} | {_cell(e.summary)} | '
                   f'{_cell(_fmt_params(e.params))} | {_cell(e.meta.inputs)} | {_cell(e.meta.reference)} | '
                   f'{_cell(e.meta.paper) or "—"} |')
    family = None
    for e in all_entries:
        if e.family != family:
            family = e.family
            out += ['', f'## {family}']
        out += ['', f'### {e.name}', '', e.summary, '']
        if e.formula:
            out += ['$$', e.formula, '$$', '']
        out += [f'- functional: `{e.functional}`', f'- parameters: `{_fmt_params(e.params)}`',
                f'- default reduction: `{e.reduction!r}`', f'- inputs: {e.meta.inputs}',
                f'- tested against: {e.meta.reference}']
        if e.meta.paper:
            out.append(f'- paper: {e.meta.paper}')
        out += ['', '```python', f'{e.config()!r}', '```']
    return '\n'.join(out) + '\n'
