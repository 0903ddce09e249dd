"""Typed exceptions of the storage package.

Every error names the store (and the part, where there is one) and what went wrong. They sit
under the project's one root, :class:`pipeline.base.errors.FasError`, the only thing this package
imports from outside itself.
"""

from __future__ import annotations

from pipeline.base.errors import FasError  # the project's error root (a module that imports nothing)


class StoreError(FasError):
    """Base class of every error the storage package raises on purpose (exit status 2)."""

    #: short machine-readable reason used in run reports
    reason: str = "store-error"


class ConfigMismatch(StoreError):
    """A writer was opened with a config other than the one the store's parts were made with."""

    reason = "config-mismatch"

    def __init__(self, message: str, *, store_hash: str, new_hash: str, keys: list[str]):
        self.store_hash = store_hash
        self.new_hash = new_hash
        self.keys = keys
        super().__init__(message)


class StoreLocked(StoreError):
    """Another run holds the store's run lock; ``holder`` is the lock file's JSON content."""

    reason = "store-locked"

    def __init__(self, message: str, *, holder: dict):
        self.holder = holder
        super().__init__(message)


class IntegrityError(StoreError):
    """The manifest or a committed part is damaged (unreadable, missing, wrong checksum)."""

    reason = "integrity"


class HDF5ImportError(StoreError):
    """An HDF5 file cannot be imported: not an export of this package, or damaged or
    inconsistent (the message names the file and the dataset)."""

    reason = "hdf5-import"


class UnsafeHDF5(HDF5ImportError):
    """An HDF5 file uses a feature that would make an import read outside the file or without
    bounds (external storage or links, virtual datasets, object/compound/enum/reference types,
    unknown objects, undeclared filters); refused before any data is read."""

    reason = "unsafe-hdf5"


class PartExists(StoreError):
    """The part is already committed with the same input checksum and config (nothing to do)."""

    reason = "part-exists"


class RepairNeeded(IntegrityError):
    """The manifest is missing while ``parts/`` holds data: refused, never cleaned; rebuild it
    with ``depthseg-fas inspect STORE --repair`` (:func:`storage.inspect.repair`)."""

    reason = "repair-needed"


class SchemaTooOld(StoreError):
    """A writer was opened on a store of a schema it may not add parts to (schema 1)."""

    reason = "schema-too-old"


class PartConflict(StoreError):
    """The part id is committed from another input (another input checksum); not replaced unless asked."""

    reason = "part-conflict"

    def __init__(self, message: str, *, part_id: str):
        self.part_id = part_id
        super().__init__(message)
