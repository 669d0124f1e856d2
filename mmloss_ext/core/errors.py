"""The errors of the input and hyper-parameter checks: each also derives from the error class
mmdet raises for the same mistake, so code written against mmdet's losses keeps catching it."""


class LossValueError(ValueError, AssertionError):
    """A bad value given to a loss: a ``ValueError`` whose message names the loss, the argument, what
    was expected and what was given.

    It is also an ``AssertionError``, because mmdet's losses ``assert`` many of the same conditions
    (a ``reduction_override`` outside ``(None, 'none', 'mean', 'sum')``, a weight of the wrong
    shape): code written against mmdet that catches ``AssertionError`` keeps working, and gets
    the message too.

    Example:
        >>> from mmloss_ext.core.reduction import check_reduction
        >>> try:
        ...     check_reduction('GIoULoss', 'avg')
        ... except AssertionError as err:
        ...     print(err)
        GIoULoss: `reduction` expected one of 'none', 'mean', 'sum', got 'avg'
    """


class UnsupportedValueError(LossValueError, NotImplementedError):
    """A hyper-parameter value that names a mode the loss does not implement (e.g. GHMC with
    ``use_sigmoid=False``): mmdet raises ``NotImplementedError`` or asserts for these."""


class MissingHyperParameterError(TypeError, AssertionError):
    """A hyper-parameter without a default left out (``num_classes`` of the V3Det losses): a
    ``TypeError`` like a missing argument, and an ``AssertionError`` like mmdet's
    ``assert num_classes != -1``."""


class KernelError(RuntimeError):
    """A fused kernel of a device other than the CPU (Triton) failed to compile or launch. The
    loss that called it catches it once (:func:`mmloss_ext.core.impl.run_with_fallback`), warns,
    and runs eagerly on that device from then on."""

    def __init__(self, kernel: str, error: BaseException) -> None:
        super().__init__(f'kernel {kernel!r}: {type(error).__name__}: {error}'.splitlines()[0])
        self.kernel, self.error = kernel, error
