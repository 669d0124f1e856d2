"""The error every input and hyper-parameter check raises for a bad value."""


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
