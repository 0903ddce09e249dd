"""Stage 4, running: the unit runner (``unit``: checksum, skip, fail, record an item), the
in-process and Prefect-task runners (``runners``) and the pipelined multi-process runner
(``parallel``) that drive the per-item stages (``stages``) into a :mod:`storage` store, their
config (``process``), backends (``engines``), run report, stage timing and HTML report.

May import every other subpackage of :mod:`pipeline` and :mod:`storage`.
"""
