"""Stage 4, running: the sequential (process) and pipelined multi-process (parallel) runners that
drive stages 1-3 into a :mod:`storage` store, stage timing and the HTML run report.

May import every other subpackage of :mod:`pipeline` and :mod:`storage`.
"""
