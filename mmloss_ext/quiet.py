"""The one warning the package's command lines silence.

mmengine resolves ``mmdet::`` config paths through setuptools' ``pkg_resources`` (importing it,
then reloading it), and recent setuptools warn on every import that it is deprecated: two lines
about mmengine's internals before any output of ``python -m mmloss_ext`` or ``tools/*.py``, which
the user of those commands can do nothing about. :func:`quiet_pkg_resources` ignores exactly that
warning, only while an entry point runs (``warnings.catch_warnings``: the caller's filters are
restored after); every other warning, mmengine's included, still shows. Importing mmloss_ext
changes no warning filter.
"""
from __future__ import annotations

import contextlib
import warnings

__all__ = ['PKG_RESOURCES_WARNING', 'quiet_pkg_resources']

#: the start of setuptools' message (matched whatever its category: a UserWarning in setuptools 80)
PKG_RESOURCES_WARNING = 'pkg_resources is deprecated as an API'


@contextlib.contextmanager
def quiet_pkg_resources():
    """Ignore setuptools' ``pkg_resources is deprecated`` warning inside the block (or the decorated
    function), nothing else.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter('always')
        ...     with quiet_pkg_resources():
        ...         warnings.warn('pkg_resources is deprecated as an API. See ...', UserWarning)
        ...         warnings.warn('something else', UserWarning)
        >>> [str(w.message) for w in seen]
        ['something else']
    """
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=PKG_RESOURCES_WARNING)
        yield
