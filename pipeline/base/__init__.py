"""Shared ground of every stage: error classes, name registries, model-asset lookup, stage records.

Imports nothing else of the project, so any stage of :mod:`pipeline` and :mod:`depthseg` may
import it.
"""
