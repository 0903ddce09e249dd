"""What every ``depthseg-fas`` sub-command module shares: user output and the one-line error.

:mod:`pipeline.cli` and the command modules it registers (:mod:`depthseg.cli`,
:mod:`pipeline.synth.cli`) import this module; it imports none of them, so the commands are
registered with plain imports and no circle.
"""

from __future__ import annotations

import argparse
import errno
import math
import sys

from pipeline.base.errors import FasError
from storage.errors import StoreError
from storage.layout import safe_text


def echo(msg: str, err: bool = False) -> None:
    """User-facing CLI output (results, paths); diagnostics go through logging."""
    stream = sys.stderr if err else sys.stdout
    try:
        stream.write(f"{msg}\n")
    except UnicodeEncodeError:  # a file name that is not UTF-8 (surrogate-escaped) on a strict stream
        enc = stream.encoding or "utf-8"
        stream.write(safe_text(msg).encode(enc, "backslashreplace").decode(enc) + "\n")
    stream.flush()


def number_type(kind: type, *, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse ``type``: a finite ``kind`` (int/float) within bounds, else exit 2 at parse time."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


#: exit status after Ctrl-C (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130
#: set to 1 (or pass --debug) to get the traceback of an error instead of its one-line message
DEBUG_ENV = "DEPTHSEG_DEBUG"
#: errno values of an OSError that are the machine's fault, not the input's (exit 1, not 2)
_SYSTEM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EROFS})
#: arguments that name a command's main input, most specific first (for errors that name none)
_INPUT_ARGS = ("h5", "checkpoint", "input", "store", "root")


def one_line(text: str, limit: int = 2000) -> str:
    """``text`` on one line (a multi-line library message, e.g. torch's state-dict errors)."""
    flat = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def error_message(exc: BaseException, args: argparse.Namespace | None = None) -> tuple[str, int]:
    """The one-line message and exit status of an error that ended a command.

    One mapping for every command, from the project's error base classes: the project's typed
    errors (every :class:`~pipeline.base.errors.FasError`: input, setup, store, worker, training
    and checkpoint errors) carry the input they concern in their message and their
    own exit status; ``KeyError`` is a registry lookup of an unknown name (exit 2); an
    ``OSError`` (a file that cannot be opened, an HDF5 file h5py cannot read) is named after its
    file, or the command's input when it names none. Anything else is a bug: its type is kept
    in the message and the traceback is one ``--debug`` away.
    """
    if isinstance(exc, KeyboardInterrupt):
        detail = getattr(exc, "detail", "")
        return "interrupted" + (f": {one_line(detail)}" if detail else ""), EXIT_INTERRUPTED
    if isinstance(exc, FasError):
        kind = "store error" if isinstance(exc, StoreError) else "error"
        return f"{kind}: {one_line(exc)}", int(exc.exit_code)
    if isinstance(exc, KeyError):
        return f"error: {one_line(exc.args[0] if len(exc.args) == 1 else exc)}", 2
    subject = next((getattr(args, a) for a in _INPUT_ARGS if getattr(args, a, None)), None)
    if isinstance(exc, OSError):
        text = one_line(exc.strerror if exc.strerror and exc.filename else exc)
        name = exc.filename or subject
        code = 1 if exc.errno in _SYSTEM_ERRNOS else 2
        return f"error: {name}: {text}" if name and str(name) not in text else f"error: {text}", code
    where = f"{subject}: " if subject else ""
    return (f"error: {where}{type(exc).__name__}: {one_line(exc)} (unexpected: {DEBUG_ENV}=1 or "
            f"--debug shows the traceback)"), 1
