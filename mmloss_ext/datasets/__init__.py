"""Bundled toy datasets for the demo configs (not imported by ``mmloss_ext`` itself)."""
from .shapes import CLASSES, METAINFO, generate_shapes, make_image, mask_to_rle, prepare_shapes_config

__all__ = ['CLASSES', 'METAINFO', 'generate_shapes', 'make_image', 'mask_to_rle', 'prepare_shapes_config']
