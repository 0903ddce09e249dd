"""Dataset stores of depthseg-fas: zarr v3 groups written part by part, read as one sequence.

On-disk layout and manifest: :mod:`storage.layout`; commit protocol: :mod:`storage.writer`;
locks: :mod:`storage.locks`; reading: :mod:`storage.reader`; integrity checks:
:mod:`storage.inspect`; HDF5 interchange: :mod:`storage.hdf5` (imported on demand).
"""

from .errors import (ConfigMismatch, IntegrityError, MigrationNeeded, PartConflict, PartExists, RepairNeeded,
                     SchemaTooOld, StoreError, StoreLocked)
from .inspect import format_summary, migrate, repair, summary, verify
from .layout import SCHEMA_VERSION, PartData, PartInfo, config_hash, file_checksum
from .locks import refuse_if_locked, run_lock
from .reader import DatasetReader, open_dataset
from .writer import DatasetWriter, PartBuilder

__all__ = [
    "SCHEMA_VERSION",
    "ConfigMismatch",
    "DatasetReader",
    "DatasetWriter",
    "IntegrityError",
    "MigrationNeeded",
    "PartBuilder",
    "PartConflict",
    "PartData",
    "PartExists",
    "PartInfo",
    "RepairNeeded",
    "SchemaTooOld",
    "StoreError",
    "StoreLocked",
    "config_hash",
    "file_checksum",
    "format_summary",
    "migrate",
    "open_dataset",
    "repair",
    "refuse_if_locked",
    "run_lock",
    "summary",
    "verify",
]
