"""Locks of a local store (both live in the housekeeping array ``<root>/staging/``, where zarr
never looks; a legacy store (schema <= 2) has them in ``.staging/``, see :func:`legacy_commit_lock`).

* ``commit.lock``: a short ``fcntl.flock`` held while the manifest is read-modified-replaced, a
  staged part is renamed into ``parts/`` or orphans are cleaned. It lets several processes of one
  run commit parts to the same store concurrently.
* ``run.lock``: a run-level exclusive lock holding JSON ``{"pid", "host", "owner", "time",
  "token"}``, published complete (written to a temporary file, then hard-linked into place, which
  fails when the lock exists, like ``O_EXCL``). A second run fails at once with
  :class:`StoreLocked` naming the holder. A lock whose pid is dead on this host is stale and is
  taken over with a warning; a lock from another host is never broken automatically. The check
  reads the lock file before waiting for ``commit.lock``: a holder paused while it commits (Ctrl-Z,
  a scheduler's suspend) must not make the second run wait without a word
  (:func:`refuse_if_locked`, which entry points call before they open the store's writer).

Remote (fsspec) stores have no locks: ``run_lock`` logs a warning and does nothing, and only one
process may write such a store at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator

from .errors import StoreLocked
from .layout import COMMIT_LOCK, LEGACY_STAGING, RUN_LOCK, STAGING, Location, ensure_staging, now_iso, token

log = logging.getLogger(__name__)


@contextlib.contextmanager
def commit_lock(loc: Location, folder: str = STAGING) -> Iterator[None]:
    """Hold the store's inter-process commit lock (blocking); no-op for remote stores."""
    if not loc.local:
        yield
        return
    if folder == STAGING:
        ensure_staging(loc)
    else:
        os.makedirs(loc.path(folder), exist_ok=True)
    fd = os.open(loc.path(folder, COMMIT_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock_waiting_loudly(fd, loc, folder)
        yield
    finally:
        os.close(fd)  # closing releases the flock


COMMIT_WAIT_WARN_S = 10.0


def _flock_waiting_loudly(fd: int, loc: Location, folder: str) -> None:
    """``flock(LOCK_EX)`` on ``fd``; when it is not had within :data:`COMMIT_WAIT_WARN_S`, log who
    holds the store's run lock (a commit takes milliseconds: the holder is paused or hung) and
    go on waiting."""
    deadline = time.monotonic() + COMMIT_WAIT_WARN_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
    holder = _read_holder(loc.path(folder, RUN_LOCK))
    log.warning("%s: waited %.0f s for the store's commit lock; still waiting (run lock: %s)", loc.url,
                COMMIT_WAIT_WARN_S, "none" if holder is None else _describe(holder))
    fcntl.flock(fd, fcntl.LOCK_EX)


def legacy_commit_lock(loc: Location) -> contextlib.AbstractContextManager[None]:
    """The commit lock writers of the legacy layout take (``.staging/commit.lock``): a migration
    holds it so that no writer of an older package commits meanwhile."""
    return commit_lock(loc, LEGACY_STAGING)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # half-written or damaged: treated as held, by an unknown holder


def _describe(holder: dict) -> str:
    if not holder:
        return "an unknown holder (unreadable lock file)"
    return (f"pid {holder.get('pid')} on host {holder.get('host')} (owner {holder.get('owner')!r}, "
            f"since {holder.get('time')})")


def _live_holder(path: str, host: str) -> dict | None:
    """The run lock at ``path`` when a live process holds it (``{}``: unreadable), else None."""
    holder = _read_holder(path)
    if holder is None:
        return None
    if holder and holder.get("host") == host and not _pid_alive(int(holder.get("pid", -1))):
        return None
    return holder


def other_run_holder(loc: Location, folder: str = STAGING) -> dict | None:
    """The run lock's record when another live process holds it (``{}``: unreadable lock), else None.

    A read of the lock file only (it answers while the holder sits in a commit); under
    :func:`commit_lock` (run locks are taken under it) the answer cannot change meanwhile. Remote
    stores: None. ``folder``: ``LEGACY_STAGING`` for the run lock of a legacy store's writers.
    """
    if not loc.local:
        return None
    host = socket.gethostname()
    holder = _live_holder(loc.path(folder, RUN_LOCK), host)
    if holder and holder.get("host") == host and int(holder.get("pid", -1)) == os.getpid():
        return None
    return holder


def _locked(loc: Location, path: str, holder: dict) -> StoreLocked:
    return StoreLocked(f"{loc.url}: store is locked by another run: {_describe(holder)}; "
                       f"remove {path} if that run is gone", holder=holder)


def refuse_if_locked(url: str | os.PathLike, storage_options: dict | None = None) -> None:
    """Raise :class:`StoreLocked` at once when another live process holds the store's run lock
    (:func:`other_run_holder`).

    Takes no lock and creates nothing, so it answers while the holder sits inside a commit
    (paused, or slow). Entry points call it before opening the store's writer (whose config
    check waits for ``commit.lock``). Remote stores and stores without a run lock: returns.
    """
    loc = Location.parse(url, storage_options)
    holder = other_run_holder(loc)
    if holder is not None:
        raise _locked(loc, loc.path(STAGING, RUN_LOCK), holder)


def describe_holder(holder: dict) -> str:
    """One line naming a run lock's holder (pid, host, owner, since)."""
    return _describe(holder)


def _publish(path: str, data: bytes, tok: str) -> None:
    """Create the lock file ``path`` holding ``data``, complete or not at all: ``data`` goes to a
    temporary file first (fsynced), which is then hard-linked to ``path`` (``link`` fails with
    :class:`FileExistsError` when ``path`` exists, like ``O_EXCL``). A reader therefore never sees
    an empty or half-written lock, and a process killed meanwhile leaves no lock that names
    nobody (its ``.tmp`` is removed with the staging folder's other dead temporaries). A file
    system without hard links falls back to ``O_EXCL`` + write."""
    tmp = f"{path}.{tok}.tmp"
    try:
        _create(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (some FUSE and SMB mounts)
            _create(path, data)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _create(path: str, data: bytes) -> None:
    """A new file ``path`` (``O_EXCL``: FileExistsError if it exists) holding ``data``, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(url: str | os.PathLike, owner: str = "", storage_options: dict | None = None) -> Iterator[dict]:
    """Hold the store's run-level exclusive lock for the duration of the ``with`` block.

    Raises :class:`StoreLocked` at once (no waiting) when another live process holds it; the
    message names the holder's pid, host and owner. Yields the lock record written. For remote
    URLs it logs a warning and does nothing (yields an empty dict).
    """
    loc = Location.parse(url, storage_options)
    if not loc.local:
        log.warning("%s: run locks are not supported on remote stores; make sure only one run "
                    "writes this store", loc.url)
        yield {}
        return
    path = os.path.join(ensure_staging(loc), RUN_LOCK)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "owner": owner, "time": now_iso(),
              "token": token()}
    data = json.dumps(record).encode("utf-8")
    holder = _live_holder(path, record["host"])
    if holder is not None:  # before waiting for commit.lock, which a paused holder may keep
        raise _locked(loc, path, holder)
    with commit_lock(loc):  # serialises stale-lock takeover between contenders
        try:
            _publish(path, data, record["token"])
        except FileExistsError:
            live = _live_holder(path, record["host"])
            if live is not None:
                raise _locked(loc, path, live) from None
            holder = _read_holder(path)
            if holder:
                log.warning("%s: taking over stale run lock of %s (process is gone)", loc.url,
                            _describe(holder))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            _publish(path, data, record["token"])
    try:
        yield record
    finally:
        if (_read_holder(path) or {}).get("token") == record["token"]:
            os.unlink(path)
