"""Contract case for the distillation loss: (n, C) student and teacher logits."""
from . import case, randn

C = 8  # LD distils GFL's distributions over reg_max + 1 bins

case('KnowledgeDistillationKLDivLoss', lambda n, dtype, gen: (randn(gen, n, C, dtype=dtype, scale=2.0),
                                                              randn(gen, n, C, dtype=dtype, scale=2.0)),
     none_shape=lambda args: (args[0].shape[0],), cfg={'T': 2.0})
