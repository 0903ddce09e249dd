"""Stage 3, pseudo-depth labels: the 3D morphable model (sfm), the landmark fit, the one z-buffer
rasterizer (raster) and the batched fit + render engine (depth).

May import :mod:`pipeline.base`.
"""
