"""Preprocessing core of depthseg-fas: frames, faces, landmarks, crops, 3D fit, depth labels.

Nothing in this package imports prefect; the Prefect flows in :mod:`flows` wrap it.
"""

__all__ = ["__version__"]
__version__ = "0.2.0"
