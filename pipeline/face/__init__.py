"""Stage 2, faces: detection, 68 landmarks, square crops, label quality checks.

May import :mod:`pipeline.base` and :mod:`pipeline.io`.
"""
