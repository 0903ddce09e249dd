"""Protocol roles as split specs of :class:`~depthseg.data.FrameDataset`.

``FrameDataset(store, protocol_split("oulu-npu-p3:fold=2", "train"))`` is the training role of
that fold: the roles are worked out from the store's per-frame metadata by
:func:`pipeline.datasets.roles.frame_roles` (one store serves every fold), and a store that
does not hold what the fold requires is refused there. Picklable, so DataLoader workers get it.
"""

from __future__ import annotations

import numpy as np

import storage
from pipeline.base.errors import ConfigError
from pipeline.datasets.roles import frame_roles, protocol_for

ROLES = ("train", "dev", "test")


class ProtocolRole:
    """The frames of ``role`` under the protocol fold ``spec`` (a view of a store's reader)."""

    def __init__(self, spec: str, role: str):
        if role not in ROLES:
            raise ConfigError(f"protocol {spec}: role must be one of {list(ROLES)}, got {role!r}")
        protocol_for(spec)  # unknown names, bad options, a missing fold: refused before any data is read
        self.spec, self.role = spec, role
        self.__name__ = f"{spec} {role}"

    def __call__(self, reader: storage.DatasetReader) -> storage.DatasetReader:
        roles = frame_roles(self.spec, reader.meta, reader.url)
        return reader.select(np.flatnonzero(roles == self.role))

    def __str__(self) -> str:
        return self.__name__

    __repr__ = __str__


def protocol_split(protocol: str | None, split: str | None) -> str | ProtocolRole | None:
    """``split`` itself without a protocol, else the protocol role it names."""
    if not protocol or split is None:
        return split
    return ProtocolRole(protocol, split)
