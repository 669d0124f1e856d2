"""Contract cases for the classification losses: (n, C) class scores with (n,) integer labels,
same-shape targets for the sigmoid losses."""
import torch

from . import case, randn

C = 4


def labels(gen, n, high=C):
    """Integer labels in [0, high): pass high=C + 1 to include mmdet's background label C."""
    return torch.randint(0, high, (n,), generator=gen)


def logits_labels(n, dtype, gen):
    return randn(gen, n, C, dtype=dtype, scale=2.0), labels(gen, n)


def logits_probs(n, dtype, gen):
    return randn(gen, n, C, dtype=dtype, scale=2.0), torch.rand(n, C, generator=gen, dtype=dtype)


def logits_binary(n, dtype, gen):
    return randn(gen, n, C, dtype=dtype, scale=2.0), (torch.rand(n, C, generator=gen) < 0.3).to(dtype)


def log_probabilities(x):
    """``log_softmax`` over dim 1 in at least float32 (torch 2.1 has no CPU half kernel), in ``x``'s dtype."""
    return torch.log_softmax(x.to(torch.promote_types(x.dtype, torch.float32)), 1).to(x.dtype)


def per_sample(args):
    return (args[0].shape[0],)


case('CrossEntropyLoss', logits_labels, none_shape=per_sample,
     cfg={'class_weight': [1.0, 0.5, 2.0, 1.5], 'label_smoothing': 0.1})
case('BCELoss', logits_probs, cfg={'pos_weight': [1.0, 2.0, 0.5, 3.0]})
case('NLLLoss', lambda n, dtype, gen: (log_probabilities(randn(gen, n, C, dtype=dtype, scale=2.0)), labels(gen, n)),
     none_shape=per_sample, cfg={'class_weight': [1.0, 0.5, 2.0, 1.5]},
     unbounded={'ignore_index': 'any int may mark ignored labels (torch uses -100)'})
case('KLDivLoss', lambda n, dtype, gen: (randn(gen, n, C, dtype=dtype, scale=2.0),
                                         randn(gen, n, C, dtype=dtype, scale=2.0)),
     none_shape=per_sample, cfg={'temperature': 2.0})
case('BalancedCrossEntropyLoss', logits_binary)
case('FocalLoss', lambda n, dtype, gen: (randn(gen, n, C, dtype=dtype, scale=2.0), labels(gen, n, C + 1)),
     cfg={'gamma': 1.5, 'alpha': 0.3})
case('QualityFocalLoss', lambda n, dtype, gen: (randn(gen, n, C, dtype=dtype, scale=2.0),
                                                (labels(gen, n, C + 1), torch.rand(n, generator=gen, dtype=dtype))),
     none_shape=per_sample, cfg={'beta': 1.5},
     mismatch=lambda args: (args[0], (args[1][0][:-1], args[1][1][:-1])))
case('VarifocalLoss', lambda n, dtype, gen: (randn(gen, n, C, dtype=dtype, scale=2.0),
                                             torch.rand(n, C, generator=gen, dtype=dtype)
                                             * (torch.rand(n, C, generator=gen) < 0.3)),
     cfg={'alpha': 0.6, 'gamma': 1.5})
# the float target is a distance the loss range-checks
case('DistributionFocalLoss', lambda n, dtype, gen: (randn(gen, n, 8, dtype=dtype),
                                                     torch.rand(n, generator=gen, dtype=dtype) * 6.99),
     none_shape=per_sample, target_range=True)
# the squared hinge of a 1e4 margin violation is 1e8: past float16's range as a value
case('HingeLoss', logits_labels, none_shape=per_sample, cfg={'margin': 0.5, 'squared': True}, float16_at_1e4=False)
# piecewise constant: no gradient to check; the arg-max reads an infinite score as a certain one
case('ZeroOneLoss', logits_labels, none_shape=per_sample, differentiable=False, saturates=True)
