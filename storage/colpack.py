"""A part's per-frame columns packed into one attribute of its ``zarr.json``, for a fast open.

Why: opening a store needs every part's per-frame columns (``meta/*``, ``qc/*``,
``fit_residual``); read as zarr arrays that is two small files per column, ~35 per part, and a
store of 5,000 parts (OULU-NPU has 4,950 videos) took far too long to open. At commit the writer
packs the committed columns (read back from the staged arrays, so they are the same bytes) into
the part group's attribute ``frame_columns``: the reader then reads one file per part. The
arrays stay the reference that zarr users read; a part without the attribute (written before
it existed) is read from its arrays.

Format: base64 of zlib of ``<JSON header>\\0<bytes>``; the header lists ``[name, dtype, n]`` per
column, sorted by name. Numeric columns are little-endian raw values (``n`` = frames); string columns
are dictionary-encoded: ``n`` unique values as fixed-width ``<U`` then one ``<i4`` code per frame.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import IntegrityError

#: the part-group attribute holding the packed columns
ATTR = "frame_columns"


def pack(columns: dict[str, np.ndarray]) -> str:
    """``{name: (N,) array}`` (numeric, or ``<U`` strings) -> the attribute's text."""
    head, blobs = [], []
    for name in sorted(columns):  # canonical: the same columns pack to the same text
        col = np.asarray(columns[name])
        if col.dtype.kind == "U":
            uniq, codes = np.unique(col, return_inverse=True)
            uniq = uniq if uniq.size else np.zeros(0, dtype="<U1")
            head.append([name, uniq.dtype.str, int(uniq.size)])
            blobs += [uniq.tobytes(), codes.astype("<i4").tobytes()]
        else:
            col = col.astype(col.dtype.newbyteorder("<"), copy=False)
            head.append([name, col.dtype.str, int(col.size)])
            blobs.append(col.tobytes())
    raw = json.dumps(head, separators=(",", ":")).encode() + b"\0" + b"".join(blobs)
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def unpack(text: str, frames: int) -> dict[str, np.ndarray]:
    """The attribute's text -> ``{name: (frames,) array}``; ValueError when it is damaged."""
    try:
        raw = zlib.decompress(base64.b64decode(text, validate=True))
        header, _, body = raw.partition(b"\0")
        head = json.loads(header)
    except (binascii.Error, zlib.error, ValueError, TypeError) as e:
        raise ValueError(f"packed columns are unreadable: {e}") from e
    out: dict[str, np.ndarray] = {}
    pos = 0
    for name, dtype_str, n in head:
        dtype = np.dtype(dtype_str)
        if dtype.kind == "U":
            need = n * dtype.itemsize + 4 * frames
            uniq = np.frombuffer(body, dtype=dtype, count=n, offset=pos)
            codes = np.frombuffer(body, dtype="<i4", count=frames, offset=pos + n * dtype.itemsize)
            if frames and (codes.min() < 0 or codes.max() >= n):
                raise ValueError(f"packed column {name!r} has codes outside its {n} values")
            col = uniq[codes] if n else np.zeros(frames, dtype="<U1")
        else:
            if n != frames:
                raise ValueError(f"packed column {name!r} has {n} values, the part has {frames} frames")
            need = n * dtype.itemsize
            col = np.frombuffer(body, dtype=dtype, count=n, offset=pos).astype(dtype.newbyteorder("="))
        pos += need  # frombuffer raises ValueError on a short body; a long one fails below
        out[name] = col
    if pos != len(body):
        raise ValueError(f"packed columns have {len(body) - pos} unexplained trailing bytes")
    return out


def read_back(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    """The columns of a part's written arrays (``{"qc/x": zarr.Array, "meta/y": ..., ...}``):
    ``meta/*``, ``qc/*`` and ``fit_residual`` by column name, strings as ``<U``."""
    out = {}
    for key, arr in arrays.items():
        kind, _, name = key.partition("/")
        if name or key == "fit_residual":
            values = np.asarray(arr[...])
            if values.dtype.kind == "T" or values.dtype == object:
                values = np.array(values.tolist(), dtype=str) if values.size else np.zeros(values.shape, "<U1")
            out[name or key] = values
    return out


def load(loc: Any, parts: Sequence[Any], names: Sequence[list[str]]) -> list[dict[str, np.ndarray] | None]:
    """Each part's packed columns (``parts``: manifest records, ``names``: the columns each must
    have, in the order wanted), None where a part has none or no readable ``zarr.json`` (its
    arrays are then read, and say what is wrong). Damaged packed columns raise IntegrityError."""
    files = [loc.path(*p.path.split("/"), "zarr.json") for p in parts]
    if loc.local:
        raws: list[Any] = []
        for f in files:
            try:
                with open(f, "rb") as fh:
                    raws.append(fh.read())
            except OSError:
                raws.append(None)
    else:
        got = loc.fs.cat(files, on_error="return") if files else {}
        raws = [got.get(f) for f in files]
    out: list[dict[str, np.ndarray] | None] = []
    for part, raw, want in zip(parts, raws, names):
        try:
            text = json.loads(raw)["attributes"].get(ATTR) if isinstance(raw, bytes) else None
        except (ValueError, KeyError, TypeError, AttributeError):
            text = None
        if text is None:
            out.append(None)
            continue
        try:
            cols = unpack(text, part.frames)
        except ValueError as e:
            raise IntegrityError(f"{loc.url}: part {part.part_id}: the packed columns in "
                                 f"{part.path}/zarr.json are damaged: {e}") from e
        if sorted(cols) != sorted(want):
            raise IntegrityError(f"{loc.url}: part {part.part_id}: packed columns {sorted(cols)} "
                                 f"do not match the manifest's {sorted(want)}")
        out.append({n: cols[n] for n in want})
    return out
