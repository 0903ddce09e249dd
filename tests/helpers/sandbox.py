"""Snapshots of a whole folder tree, to prove an operation touched nothing outside a store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree_snapshot(root: str | os.PathLike, *, skip: str | os.PathLike | None = None) -> dict[str, tuple]:
    """Every entry below ``root`` (not following links) -> (kind, content hash or link target, mode).

    ``skip``: a folder below ``root`` left out (e.g. the store the operation may write). Two
    snapshots are equal exactly when no file, folder or link was created, changed or removed.
    """
    root, out = Path(root), {}
    skip_path = Path(skip).resolve() if skip is not None else None
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if skip_path is not None and (here.resolve() == skip_path):
            dirnames[:] = []
            continue
        for name in sorted(dirnames) + sorted(filenames):
            p = here / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), st.st_mode)
            elif p.is_dir():
                out[rel] = ("dir", "", st.st_mode)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode)
    return out
