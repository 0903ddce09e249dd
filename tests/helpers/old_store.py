"""A real schema-1 store (written by the code of main before schema 2), as a tarball fixture.

``schema1_store.tar.gz`` was made by ``tests.helpers.stores.write_store`` at commit 6c307de
(schema 1: no crc32c codecs, no ``part.json``, and, as every schema-1 spoof part, no depth
chunk at all): parts ``old-live`` (2 live frames, obama.jpg) and ``old-spoof`` (3 spoof frames,
biden.jpg), config ``tests.helpers.stores.CONFIG``. A tarball of the old writer's output is the
honest fixture: rewriting attributes of a store written by today's writer would keep its codecs.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

TARBALL = Path(__file__).with_name("schema1_store.tar.gz")


def extract_schema1_store(dest: str | Path) -> Path:
    """Unpack the schema-1 store into ``dest``; returns the store's path (``dest/store.zarr``)."""
    dest = Path(dest)
    with tarfile.open(TARBALL) as tar:
        tar.extractall(dest, filter="data")
    return dest / "store.zarr"
