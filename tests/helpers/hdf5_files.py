"""HDF5 files for import tests: a real export of the standard test store, and edits of it."""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from storage.hdf5 import export_hdf5
from tests.helpers.stores import PARTS, write_store


def valid_export(folder: str | os.PathLike, parts: list = PARTS) -> Path:
    """Write a test store (tests.helpers.stores, standard ``parts``) in ``folder``, export it; the .h5."""
    folder = Path(folder)
    store = folder / "src.zarr"
    write_store(store, parts=parts)
    h5 = folder / "export.h5"
    export_hdf5(store, h5)
    return h5


def replace_dataset(f: h5py.File, path: str, **create: object) -> h5py.Dataset:
    """Delete the dataset at ``path`` and create another there (``create``: create_dataset kwargs)."""
    del f[path]
    return f.create_dataset(path, **create)


def replace_link(f: h5py.File, path: str, link: object) -> None:
    """Make ``path`` a link (h5py.SoftLink / ExternalLink) instead of its dataset."""
    del f[path]
    f[path] = link
