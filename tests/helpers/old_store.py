"""Real stores of older schemas (written by the code of main before each change), as tarball fixtures.

``schema1_store.tar.gz`` was made by ``tests.helpers.stores.write_store`` at commit 6c307de
(schema 1: no crc32c codecs, no ``part.json``, and, as every schema-1 spoof part, no depth
chunk at all): parts ``old-live`` (2 live frames, obama.jpg) and ``old-spoof`` (3 spoof frames,
biden.jpg), config ``tests.helpers.stores.CONFIG``. A tarball of the old writer's output is the
honest fixture: rewriting attributes of a store written by today's writer would keep its codecs.

``schema2_store.tar.gz`` (the legacy layout: ``manifest.json`` and ``.staging/commit.lock`` in the
root) was made by ``tests.helpers.stores.write_store`` at commit a4cd58f with
``parts=SCHEMA2_PARTS`` and ``CONFIG``: ``old-live`` is ``make_part(2, seed=0, ...)``, ``old-spoof``
``make_part(3, seed=1, ...)``, so a test can rebuild the frames it holds.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

TARBALL = Path(__file__).with_name("schema1_store.tar.gz")
SCHEMA2_TARBALL = Path(__file__).with_name("schema2_store.tar.gz")
#: the ``write_store`` parts of the schema-2 fixture (part id, frames, label, splits, face)
SCHEMA2_PARTS = [("old-live", 2, "live", ("train",), "obama.jpg"), ("old-spoof", 3, "spoof", ("test",), "biden.jpg")]


def extract_schema1_store(dest: str | Path, tarball: Path = TARBALL) -> Path:
    """Unpack the schema-1 store into ``dest``; returns the store's path (``dest/store.zarr``)."""
    dest = Path(dest)
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest / "store.zarr"


def extract_schema2_store(dest: str | Path) -> Path:
    """Unpack the schema-2 store (legacy layout) into ``dest``; returns ``dest/store.zarr``."""
    return extract_schema1_store(dest, SCHEMA2_TARBALL)
