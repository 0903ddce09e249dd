"""Stage 1, inputs: work items (one video or image folder each), input collection, frame decoding.

May import :mod:`pipeline.base`.
"""
