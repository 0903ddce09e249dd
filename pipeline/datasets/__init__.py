"""Dataset adapters (dataset root -> work items) and evaluation protocols.

Adapters (``list_adapters()``): ``oulu-npu``, ``siw``, ``casia-fasd``, ``replay-attack``,
``msu-mfsd``, ``celeba-spoof``, ``csv`` (a manifest) and ``folder`` (any tree, labels
unknown). ``scan_dataset(name, root, **options) -> ScanResult(items, rejected, ignored)``;
names that do not follow a dataset's official layout are reported in ``rejected`` with the
reason, never guessed. Conventions shared by all items are listed in :mod:`.base`.

Protocols (``list_protocols()``): OULU-NPU 1-4, SiW 1-3, the O/C/I/M cross-dataset family and
``official``; ``make_protocol(name, **kw).split(items) -> ProtocolSplit(train, dev, test)``,
``check_subject_disjoint(split)``. See :mod:`.protocols`.
"""

from __future__ import annotations

# importing the adapter modules registers them
from . import casia_fasd, celeba_spoof, csv_adapter, folder, msu_mfsd, oulu_npu, replay_attack, siw  # noqa: F401
from .base import (
    ADAPTERS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DatasetAdapter,
    ScanResult,
    attack_family,
    create_adapter,
    item_dataset,
    list_adapters,
    scan_dataset,
)
from .protocols import (
    PROTOCOLS,
    CrossDatasetProtocol,
    OfficialProtocol,
    OuluProtocol,
    Protocol,
    ProtocolSplit,
    SiwProtocol,
    SubjectOverlapError,
    check_subject_disjoint,
    holdout_subjects,
    list_protocols,
    make_protocol,
    parse_protocol_spec,
    protocol_folds,
)
from .summary import datasets_command, format_protocol_split, format_scan_summary

__all__ = [
    "ADAPTERS",
    "IMAGE_EXTENSIONS",
    "PROTOCOLS",
    "VIDEO_EXTENSIONS",
    "CrossDatasetProtocol",
    "DatasetAdapter",
    "OfficialProtocol",
    "OuluProtocol",
    "Protocol",
    "ProtocolSplit",
    "ScanResult",
    "SiwProtocol",
    "SubjectOverlapError",
    "attack_family",
    "check_subject_disjoint",
    "create_adapter",
    "datasets_command",
    "format_protocol_split",
    "format_scan_summary",
    "holdout_subjects",
    "item_dataset",
    "list_adapters",
    "list_protocols",
    "make_protocol",
    "parse_protocol_spec",
    "protocol_folds",
    "scan_dataset",
]
