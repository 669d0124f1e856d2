"""The ``mmloss_ext`` registry scope.

``MODELS`` is a child of mmdet's ``MODELS`` registry with scope ``'mmloss_ext'``. Because it is a
child, ``type='mmloss_ext.CIoULoss'`` resolves from mmdet's registry; because mmengine imports
``'<scope>.registry'`` on demand and ``locations`` points at the losses, that works even in a process
that never imported :mod:`mmloss_ext` itself.

A name written with the prefix resolves to mmloss_ext's own class or fails. mmengine's child
registries fall back to their parents for a name they lack, so on its own ``'mmloss_ext.GHMC'``
would silently build mmdet's ``GHMC``; here it raises a ``KeyError`` naming the closest losses
mmloss_ext does register. Plain names keep mmengine's rules (``'GIoULoss'`` from mmdet's registry is
mmdet's; with ``mmloss_ext`` as the default scope, mmdet's detectors, heads and necks still resolve
through the parent), and so does every other scope (``'mmdet.GIoULoss'``).

How: the registry mmdet's ``MODELS`` holds as its ``'mmloss_ext'`` child is a view of ``MODELS``
(:class:`_PrefixedNames`, same modules, same state) that mmdet's registry asks only for names
written ``mmloss_ext.X``, so it answers those strictly; everything else (default scopes,
``_scope_``, plain names) reaches ``MODELS`` itself, which is strict only for its own prefix.
"""
import difflib

from mmdet.registry import METRICS as MMDET_METRICS
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import Registry

__all__ = ['MODELS', 'MMDET_MODELS', 'METRICS', 'register_loss', 'SCOPE']

SCOPE = 'mmloss_ext'


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


MODELS = LossRegistry('model', parent=MMDET_MODELS, scope=SCOPE, locations=['mmloss_ext.losses'])
MMDET_MODELS._children[SCOPE] = _PrefixedNames(MODELS)
#: the demos' evaluation metric (mmloss_ext.evaluation, imported on first use): type='mmloss_ext.MaskBoxCocoMetric'
METRICS = Registry('metric', parent=MMDET_METRICS, scope=SCOPE, locations=['mmloss_ext.evaluation'])


def register_loss(cls):
    """Class decorator: register ``cls`` under its class name in the ``mmloss_ext`` scope.

    Names mmdet does not define are also registered in mmdet's ``MODELS`` under the plain name
    (``type='CharbonnierLoss'`` then works once the package is imported). Names mmdet owns
    (``FocalLoss``, ``GIoULoss``, ...) keep resolving to mmdet's class; nothing of mmdet's is
    overridden.
    """
    MODELS.register_module(module=cls)
    if _mmdet_models_import():  # mmdet registers its own losses first
        if cls.__name__ not in MMDET_MODELS.module_dict:
            MMDET_MODELS.register_module(module=cls)
    return cls


_MMDET_MODELS_IMPORT: list = []


def _mmdet_models_import() -> bool:
    """Whether ``mmdet.models`` imports (tried once). Without mmcv's compiled ops it does not (e.g.
    mmengine, mmcv-lite and mmdet installed from pure-Python wheels next to torch and triton): no
    mmdet detector can be built then, so the plain names are left out; ``mmloss_ext.X``, the
    classes and the functionals work as usual."""
    if not _MMDET_MODELS_IMPORT:
        try:
            MMDET_MODELS.import_from_location()
            _MMDET_MODELS_IMPORT.append(True)
        except ImportError:
            _MMDET_MODELS_IMPORT.append(False)
    return _MMDET_MODELS_IMPORT[0]
