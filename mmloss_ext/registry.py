"""The ``mmloss_ext`` registry scope.

``MODELS`` is a child of mmdet's ``MODELS`` registry with scope ``'mmloss_ext'``. Because it is a
child, ``type='mmloss_ext.CIoULoss'`` resolves from mmdet's registry; because mmengine imports
``'<scope>.registry'`` on demand and ``locations`` points at the losses, that works even in a process
that never imported :mod:`mmloss_ext` itself.
"""
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMDET_MODELS, scope='mmloss_ext', locations=['mmloss_ext.losses'])

__all__ = ['MODELS', 'MMDET_MODELS', 'register_loss']


def register_loss(cls):
    """Class decorator: register ``cls`` under its class name in the ``mmloss_ext`` scope.

    Names mmdet does not define are also registered in mmdet's ``MODELS`` under the plain name
    (``type='CharbonnierLoss'`` then works once the package is imported). Names mmdet owns
    (``FocalLoss``, ``GIoULoss``, ...) keep resolving to mmdet's class; nothing of mmdet's is
    overridden.
    """
    MODELS.register_module(module=cls)
    MMDET_MODELS.import_from_location()  # make mmdet register its own losses first
    if cls.__name__ not in MMDET_MODELS.module_dict:
        MMDET_MODELS.register_module(module=cls)
    return cls
