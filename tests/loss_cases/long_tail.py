"""Contract cases for the long-tail classification losses: C = 4 classes, labels in [0, C] with C
the background, and the classifier widths of mmdet's head protocol (C + 2 for Seesaw, C + 1 for
EQLv2 and the softmax custom cross-entropy, C for the custom focal loss).

* ``num_classes`` has no default in CrossEntropyCustomLoss and FocalCustomLoss: ``cfg`` gives it.
* SeesawLoss returns a dict of two parts (summed by ``helpers.build_case``); its classes part is
  a mean over the positive samples, so 'mean' is not 'none' averaged (``additive=False``).
* SeesawLoss and EQLV2Loss keep statistics that each training-mode call moves: ``stateful``, so
  the generic tests see the initial statistics (tests/test_long_tail.py covers their updates).
* Seesaw's compensation factor is a detached function of the scores, which finite differences
  would differentiate: the positives' own class scores highest, so the factor is 1 around the
  inputs and the float64 gradcheck stays exact (tests/test_long_tail.py compares its values
  with mmdet where it is active).
"""
import torch

from . import case, randn
from .classification import C, labels


def per_sample(args):
    return (args[0].shape[0],)


def seesaw_inputs(n, dtype, gen):
    y = labels(gen, n, C + 1)
    logits = randn(gen, n, C + 2, dtype=dtype, scale=2.0)
    top = logits[:, :C].max(1).values + 1.0 + torch.rand(n, generator=gen, dtype=dtype)
    rows = torch.nonzero(y < C).squeeze(1)
    logits[rows, y[rows]] = top[rows]  # the label's score highest among the classes: no compensation
    return logits, y


case('SeesawLoss', seesaw_inputs, cfg={'num_classes': C, 'p': 0.8, 'q': 2.0}, none_shape=per_sample,
     additive=False, stateful=True)
case('EQLV2Loss', lambda n, dtype, gen: (randn(gen, n, C + 1, dtype=dtype, scale=2.0), labels(gen, n, C + 1)),
     cfg={'num_classes': C, 'alpha': 2.0}, none_shape=per_sample, stateful=True)
case('CrossEntropyCustomLoss', lambda n, dtype, gen: (randn(gen, n, C + 1, dtype=dtype, scale=2.0),
                                                      labels(gen, n, C + 1)),
     cfg={'num_classes': C, 'class_weight': [1.0, 0.5, 2.0, 1.5, 1.0]}, none_shape=per_sample)
case('FocalCustomLoss', lambda n, dtype, gen: (randn(gen, n, C, dtype=dtype, scale=2.0), labels(gen, n, C + 1)),
     cfg={'num_classes': C, 'gamma': 1.5, 'alpha': 0.3})
