"""Check, where a task runs, that the project's packages are the installed ones.

A Dask worker puts its local directory first on ``sys.path``, and that directory holds Dask's
spill folder ``storage/``; any folder named like a top-level package (``storage``, ``pipeline``,
``depthseg``, ``flows``) in the worker's working directory does the same. Python takes such a
folder without ``__init__.py`` as a *namespace package* when the regular package is found only
later, by an import hook (setuptools' default editable install: a meta-path finder that runs
after the path search). ``import storage`` then "succeeds" on an empty folder and the first
``from storage import X`` fails far from the cause.

The root fix is the install: ``make setup`` installs the project with a ``.pth`` path entry
(``editable_mode=compat``), so the path search finds the regular packages and a namespace
folder can never win. :func:`require_project_packages` is the guard for other installs: it
fails at once, in one line, naming the folder that shadows the package. It only looks the
names up (``find_spec``), importing nothing.
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import importlib.util
import os
import socket

#: the project's top-level packages
PACKAGES = ("storage", "pipeline", "depthseg", "flows")


class ShadowedPackage(ImportError):
    """A top-level package of the project resolves to a folder that is not the package."""


def require_project_packages(names: tuple[str, ...] = PACKAGES) -> None:
    """Raise :class:`ShadowedPackage` when one of ``names`` resolves to a namespace package."""
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin not in (None, "namespace"):
            continue  # missing (its own ImportError later) or a regular package
        where = ", ".join(str(p) for p in (spec.submodule_search_locations or []))
        raise ShadowedPackage(
            f"package {name!r} is shadowed by the folder {where} (no __init__.py) that comes first on "
            f"sys.path (a Dask worker's local directory holds its spill folder 'storage'); install the "
            f"project with `pip install -e . --config-settings editable_mode=compat` (make setup) or "
            f"non-editable, or start the worker elsewhere")


# --------------------------------------------------------------------------- shared paths

#: bytes hashed from the start of a file to tell two copies apart
_PROBE_BYTES = 1 << 16


def fingerprint(path: str) -> str:
    """Size and hash of the first 64 KiB of the file ``path``, or ``missing`` (runs on workers)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_PROBE_BYTES)
        return f"{os.path.getsize(path)}:{hashlib.sha256(head).hexdigest()[:16]}"
    except OSError:
        return "missing"


def unseen_paths(address: str, expected: dict[str, tuple[str, str]]) -> list[str]:
    """``label: path (worker: why)`` for each path a worker of the Dask cluster at ``address``
    does not see as this machine does; ``expected`` maps a label to (path, :func:`fingerprint`)."""
    from distributed import Client  # on use: dask.distributed is heavy (~0.5 s), only this check needs it

    problems = []
    with Client(address, timeout=60) as client:
        for label, (path, want) in expected.items():
            seen = client.run(fingerprint, path)
            problems += [f"{label}: {path} (worker {w}: {'missing' if got == 'missing' else 'other contents'})"
                         for w, got in sorted(seen.items()) if got != want]
    return problems


def is_local_address(address: str) -> bool:
    """Whether a scheduler address (``tcp://host:port``) is on this machine."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0", socket.gethostname(), socket.getfqdn())


# --------------------------------------------------------------------------- process exit

_exit_hook = False


def skip_collection_at_exit() -> None:
    """Make this process's exit skip the garbage collector's passes over everything it loaded.

    A task process of the process pool is *spawned*, and it ends with a full interpreter
    shutdown, whose collections walk every object of prefect, torch, OpenCV and the models:
    2.1-2.3 s between the last task's end and the pool's shutdown (a pool of 2 that loaded the
    backends), time the flow run waits for. ``gc.freeze()`` in an exit handler (run before the
    handlers registered earlier: prefect's and torch's still run) takes those objects out of the
    collector's view: 0.4-0.5 s. Memory goes back to the system with the process as before;
    objects still alive at exit lose only a ``__del__`` that Python never promised to call.
    Registered once per process (the thread runner's flow process included)."""
    global _exit_hook
    if not _exit_hook:
        atexit.register(gc.freeze)
        _exit_hook = True
