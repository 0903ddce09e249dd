"""Signals for subprocesses that a test interrupts like a terminal's Ctrl-C."""

from __future__ import annotations

import signal


def sigint_default() -> None:
    """``preexec_fn`` for a child that a test sends SIGINT: the signal's default disposition again.

    A shell starts a background job (``make test &``, a CI runner's non-interactive shell) with
    SIGINT ignored, the child inherits that, and Python then installs no KeyboardInterrupt handler:
    the test's Ctrl-C would do nothing and the run would finish instead of stopping.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
