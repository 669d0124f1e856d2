"""What the losses and the fused kernels share, and nothing else.

* :mod:`.reduction` -- ``weight_reduce_loss`` (mmdet 3.x semantics) and ``reduce_summed`` for fused totals;
* :mod:`.inputs` -- input checks with messages that name the loss and the argument, the float32 policy;
* :mod:`.hparams` -- hyper-parameters declared once on the functional (:func:`~.hparams.declare`);
* :mod:`.impl` -- the ``impl='auto'|'eager'|'fused'`` switch;
* :mod:`.selfcheck` -- a fused kernel's first result on a new device against the eager spec's;
* :mod:`.abi` -- the fused kernels' ids, constants and interface version (read by setup.py too);
* :mod:`.errors` -- ``LossValueError``, the error of every bad value, and its kin;
* :mod:`.compat` -- what differs between the supported torch releases, detected by feature.

:mod:`mmloss_ext.losses` and :mod:`mmloss_ext.kernels` both import from here and never from each
other's internals (the losses call only the kernels' entry points).
"""
