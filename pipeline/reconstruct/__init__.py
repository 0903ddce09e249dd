"""Stage 3, pseudo-depth labels: the 3D morphable model (sfm), the landmark fit, the one z-buffer
rasterizer (raster) and the batched fit + render engine (depth).

May import :mod:`pipeline.base`.
"""

#: what the stored depth labels mean (see :mod:`pipeline.reconstruct.depth`); bump on any change
#: of it. Light on purpose: the store config reads it without importing torch.
LABEL_VERSION = 2
