"""Definitions shared across mmloss_ext's layers (see :mod:`.abi` for the fused kernels' interface)."""
