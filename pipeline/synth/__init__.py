"""The synthetic live/print/replay sample set (``depthseg-fas synth``): real portraits animated,
printed and replayed in software, rendered with :mod:`pipeline.reconstruct`'s rasterizer.

May import :mod:`pipeline.base`, :mod:`pipeline.io`, :mod:`pipeline.face`, :mod:`pipeline.reconstruct`.
"""
