"""The ``mmloss_ext`` registry scope, where a registry exists.

Every loss class is recorded in :data:`LOSSES` (name -> class) whatever is installed; the classes
are the same objects in every case. Where they are also registered depends on the environment:

* **mmdet installed**: :data:`MODELS` is a child of mmdet's ``MODELS`` registry with scope
  ``'mmloss_ext'``. Because it is a child, ``type='mmloss_ext.CIoULoss'`` resolves from mmdet's
  registry; because mmengine imports ``'<scope>.registry'`` on demand and ``locations`` points at
  the losses, that works even in a process that never imported :mod:`mmloss_ext` itself. Names
  mmdet does not define are also registered in mmdet's ``MODELS`` under the plain name, once
  mmdet's own models are registered (:func:`_add_plain_names`): nothing of mmdet's is imported
  here beyond its registry module.
* **mmengine without mmdet** (mmseg, mmyolo, mmpose, ...): :data:`MODELS` is a child of mmengine's
  root ``MODELS``, so any OpenMMLab config can still say ``type='mmloss_ext.X'``.
* **neither**: there is no registry; :data:`MODELS` lists the losses (``module_dict``) and raises an
  ``ImportError`` saying what to install when asked to build or look up a config.

A name written with the prefix resolves to mmloss_ext's own class or fails. mmengine's child
registries fall back to their parents for a name they lack, so on its own ``'mmloss_ext.GHMC'``
would silently build mmdet's ``GHMC``; here it raises a ``KeyError`` naming the closest losses
mmloss_ext does register. Plain names keep mmengine's rules (``'GIoULoss'`` from mmdet's registry is
mmdet's; with ``mmloss_ext`` as the default scope, mmdet's detectors, heads and necks still resolve
through the parent), and so does every other scope (``'mmdet.GIoULoss'``).

How: the registry the parent holds as its ``'mmloss_ext'`` child is a view of ``MODELS``
(:class:`_PrefixedNames`, same modules, same state) that the parent asks only for names
written ``mmloss_ext.X``, so it answers those strictly; everything else (default scopes,
``_scope_``, plain names) reaches ``MODELS`` itself, which is strict only for its own prefix.
"""
import difflib
import sys
from types import MappingProxyType
from typing import Dict

__all__ = ['MODELS', 'MMDET_MODELS', 'METRICS', 'LOSSES', 'register_loss', 'SCOPE']

SCOPE = 'mmloss_ext'

#: every mmloss_ext loss class by name, with or without a registry
LOSSES: Dict[str, type] = {}

try:
    from mmengine.registry import MODELS as _ROOT_MODELS
    from mmengine.registry import Registry
except ImportError:  # torch alone: plain classes
    _ROOT_MODELS = None
    Registry = object

try:
    from mmdet.registry import METRICS as MMDET_METRICS
    from mmdet.registry import MODELS as MMDET_MODELS
except ImportError:  # mmdet is optional
    MMDET_METRICS = MMDET_MODELS = None


class LossRegistry(Registry):
    """mmengine's ``Registry``, except that ``'mmloss_ext.X'`` never falls back to a parent's ``X``."""

    def get(self, key):
        scope, name = self.split_scope_key(key)
        if scope == self.scope and '.' not in name:
            return self.get_own(name)
        # a plain name (the parent chain applies), another scope, or a dotted import path
        return super().get(key)

    def get_own(self, name: str):
        """The class registered here as ``name``; a ``KeyError`` naming the closest ones if none."""
        self.import_from_location()
        if name in self._module_dict:
            return self._module_dict[name]
        raise KeyError(self._unknown(name))

    def _unknown(self, name: str) -> str:
        own = sorted(self._module_dict)
        close = difflib.get_close_matches(name, own, n=3, cutoff=0.0)
        msg = (f"type='{self.scope}.{name}': mmloss_ext registers no loss named {name!r} "
               f"(closest: {', '.join(close)})")
        if self.parent is not None and name in self.parent.module_dict:
            msg += (f"; {self.parent.scope}'s own {name} is type='{name}' "
                    f"(or '{self.parent.scope}.{name}')")
        return msg + '. `python -m mmloss_ext list` shows every loss.'

    def __contains__(self, key) -> bool:
        try:
            return super().__contains__(key)
        except KeyError:
            return False


class _PrefixedNames(LossRegistry):
    """What mmdet's ``MODELS`` holds as its ``'mmloss_ext'`` child: a view of :data:`MODELS` that
    shares its state (modules, children, imports), asked by the parent only for names the config
    wrote as ``mmloss_ext.X`` (the parent strips the prefix), so it looks up no parent for them.

    A scope search (the default scope ``'mmloss_ext'``, ``_scope_='mmloss_ext'``) finds
    :data:`MODELS` itself through :meth:`_search_child`, with mmengine's plain-name rules.
    """
    __slots__ = ('_registry',)

    def __init__(self, registry: LossRegistry) -> None:  # no Registry.__init__: nothing new to set up
        self.__dict__ = registry.__dict__
        self._registry = registry

    def get(self, key):
        if '.' in key:  # a dotted import path the parent will try itself: mmengine's rules
            return self._registry.get(key)
        return self.get_own(key)

    def _search_child(self, scope):
        return self._registry._search_child(scope)


class _NoRegistry:
    """:data:`MODELS` where mmengine is not installed: it lists the losses (``module_dict``, what the
    catalogue reads) and refuses everything a registry does, saying what to install."""

    scope = SCOPE

    @property
    def module_dict(self):
        return MappingProxyType(LOSSES)

    def __contains__(self, key) -> bool:
        return key in LOSSES

    def __getattr__(self, attr):
        raise ImportError(f'mmloss_ext.registry.MODELS.{attr}: building losses from config dicts needs mmengine '
                          f'(`pip install mmengine`, or mmdet for detection configs); without it, use the classes '
                          f'directly, e.g. `from mmloss_ext import {next(iter(sorted(LOSSES)), "GIoULoss")}`.')


def _make_registry():
    """:data:`MODELS` under mmdet's ``MODELS`` (else mmengine's root), and the strict view its parent
    holds; a :class:`_NoRegistry` without mmengine."""
    if _ROOT_MODELS is None:
        return _NoRegistry()
    parent = MMDET_MODELS if MMDET_MODELS is not None else _ROOT_MODELS
    registry = LossRegistry('model', parent=parent, scope=SCOPE, locations=['mmloss_ext.losses'])
    parent._children[SCOPE] = _PrefixedNames(registry)
    return registry


MODELS = _make_registry()
#: whether mmdet's own models are registered, so that the names it lacks are known
_PLAIN_NAMES = {'ready': False}
#: the demos' evaluation metric (mmloss_ext.evaluation, imported on first use), with mmdet only:
#: type='mmloss_ext.MaskBoxCocoMetric'
METRICS = (None if MMDET_METRICS is None else
           Registry('metric', parent=MMDET_METRICS, scope=SCOPE, locations=['mmloss_ext.evaluation']))


def register_loss(cls):
    """Class decorator: record ``cls`` in :data:`LOSSES` under its class name and register it in the
    ``mmloss_ext`` scope where a registry exists.

    The name is the one its functional declares (``@declare('X')`` on ``cls.loss_fn``: the one
    place a loss's name is written, which its error messages use): a class named otherwise is
    refused with a ``TypeError``.

    With mmdet, names mmdet does not define are also registered in mmdet's ``MODELS`` under the plain
    name (``type='CharbonnierLoss'`` then works once the package is imported). Names mmdet owns
    (``FocalLoss``, ``GIoULoss``, ...) keep resolving to mmdet's class; nothing of mmdet's is
    overridden.
    """
    name = cls.__name__
    declared = getattr(getattr(getattr(cls, 'loss_fn', None), 'spec', None), 'loss', None)
    if declared != name:
        raise TypeError(f'mmloss_ext: class {name} registers the loss its functional declares, expected the name '
                        f'{declared!r} (`@declare(...)` on {name}.loss_fn), got {name!r}')
    if LOSSES.get(name, cls) is not cls:
        raise KeyError(f'mmloss_ext: two losses named {name} ({LOSSES[name].__module__} and {cls.__module__})')
    LOSSES[name] = cls
    if isinstance(MODELS, LossRegistry):
        MODELS.register_module(module=cls)
    if _PLAIN_NAMES['ready']:
        _register_plain_name(cls)
    return cls


def _register_plain_name(cls) -> None:
    if cls.__name__ not in MMDET_MODELS.module_dict:
        MMDET_MODELS.register_module(module=cls)


def _add_plain_names() -> None:
    """Register the plain names mmdet lacks once mmdet's models are in its registry: now, if
    ``mmdet.models`` is imported already, else right after mmdet's registry imports them (on its
    first lookup or build; an mmdet without mmcv's compiled ops fails there, and its plain names
    are then left out: ``mmloss_ext.X``, the classes and the functionals work as usual).
    Registering them earlier would collide with mmdet's own registration of its names."""
    if MMDET_MODELS is None:
        return
    original = MMDET_MODELS.import_from_location

    def ready() -> None:
        _PLAIN_NAMES['ready'] = True
        for cls in LOSSES.values():
            _register_plain_name(cls)

    def import_from_location() -> None:
        original()
        if not _PLAIN_NAMES['ready']:
            ready()

    if 'mmdet.models' in sys.modules:
        ready()
    else:
        MMDET_MODELS.import_from_location = import_from_location


_add_plain_names()
