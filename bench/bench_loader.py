"""Training data loading: the project's store loader vs a JPEG + PNG folder of the same frames.

    .venv/bin/python -m bench.bench_loader                 # 3,000 crops, 256², workers 0 and 2
    .venv/bin/python -m bench.bench_loader --frames 600 --open-parts 500   # quick look

Data: ``--frames`` jittered 256² face crops of the shared portraits (``data/faces``), in parts
of ``--part-frames`` (one portrait per part; every 4th part spoof, with zero depth; live parts
get an ellipsoid depth map), written by :class:`storage.DatasetWriter`. The same frames go to a
folder as one JPEG (q95) + one PNG depth per frame, read by a plain torch ``Dataset`` (cv2
decode, BGR -> RGB) with the default collate. Both loaders: uniform per-frame shuffle, batch
``--batch-size``, workers 0 and 2, page cache warmed first; each (loader, workers) runs
``--epochs`` epochs, interleaved, and the best epoch counts (timed from an epoch's first batch:
starting the workers is not counted; each loader is made once and iterated every epoch, as the
trainer does, so one-time set-up such as :mod:`depthseg.batchpool`'s buffers is not counted
either). Also: the ceiling of any store loader here, the zstd decode alone of
the chunks of 20 frames of every part in 1 process and in 2 at once; bytes per frame on disk
for both; the time to open a store of
``--open-parts`` tiny parts (one part written, then hard-linked under new ids into the
manifest) with the packed columns (:mod:`storage.colpack`), and of ``--open-before-parts``
through the part arrays (the path before, too slow for 5,000).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import storage
from depthseg.data import FrameDataset, make_loader
from storage import colpack
from storage.layout import Location, read_manifest, write_manifest
from tests.helpers.stores import make_part
from tests.helpers.train_store import SHARED, ellipsoid_depth, face_crops

#: portrait -> (face centre x/W, centre y/H, face side / W), as in tests/helpers/train_store.py
FACES = {
    "faces/obama.jpg": (0.52, 0.17, 0.30),
    "faces/obama2.jpg": (0.55, 0.30, 0.42),
    "faces/biden.jpg": (0.58, 0.13, 0.40),
    "faces/obama-240p.jpg": (0.50, 0.17, 0.11),
    "faces/obama-1080p.jpg": (0.50, 0.17, 0.11),
}


def write_data(root: Path, frames: int, part_frames: int, size: int) -> tuple[str, Path]:
    """The store and the JPEG + PNG folder of the same frames."""
    store, folder = str(root / "store.zarr"), root / "folder"
    folder.mkdir()
    writer = storage.DatasetWriter.open(store, {"bench": "loader", "size": size})
    rng = np.random.default_rng(0)
    face_depth = ellipsoid_depth(size)
    names = list(FACES)
    labels = []
    for p, start in enumerate(range(0, frames, part_frames)):
        n = min(part_frames, frames - start)
        name = names[p % len(names)]
        image, _ = face_crops(SHARED / name, *FACES[name], n, size, rng)
        spoof = p % 4 == 3
        data = make_part(n, seed=p, label="spoof" if spoof else "live", video_id=f"v{p:03d}")
        data.image = image
        data.depth = np.zeros((n, size, size), np.uint8) if spoof else np.repeat(face_depth[None], n, 0)
        data.landmarks = data.landmarks * (size / 64)
        writer.write_part(f"v{p:03d}", data, input_checksum=f"bench-{p}")
        for k in range(n):
            i = start + k
            cv2.imwrite(str(folder / f"{i:05d}.jpg"), cv2.cvtColor(image[k], cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(folder / f"{i:05d}.png"), data.depth[k])
        labels += [not spoof] * n
    np.save(folder / "is_live.npy", np.array(labels))
    return store, folder


class FolderDataset(Dataset):
    """The baseline: one JPEG + one PNG per frame, decoded with cv2."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.is_live = np.load(folder / "is_live.npy")

    def __len__(self) -> int:
        return len(self.is_live)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = cv2.cvtColor(cv2.imread(str(self.folder / f"{i:05d}.jpg"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(self.folder / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE)
        return {"image": torch.from_numpy(image), "depth": torch.from_numpy(depth),
                "is_live": torch.tensor(bool(self.is_live[i])), "index": torch.tensor(i)}


def disk_bytes(path: Path | str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def warm(path: Path | str) -> None:
    for f in Path(path).rglob("*"):
        if f.is_file():
            f.read_bytes()


def epoch_rate(loader: DataLoader) -> float:
    """Images/s of one epoch, timed from its first batch (so not counting worker start-up)."""
    t0, n = None, 0
    for batch in loader:
        if t0 is None:
            t0 = time.perf_counter()
        else:
            n += len(batch["index"])
    return n / (time.perf_counter() - t0)


def loaders(store: str, folder: Path, batch: int, workers: int) -> dict[str, DataLoader]:
    g = torch.Generator().manual_seed(0)
    return {
        "store (make_loader)": make_loader(FrameDataset(store, "train"), batch, shuffle=True, generator=g,
                                           num_workers=workers),
        "store (plain DataLoader)": DataLoader(FrameDataset(store, "train"), batch_size=batch, shuffle=True,
                                               generator=g, num_workers=workers),
        "JPEG+PNG folder": DataLoader(FolderDataset(folder), batch_size=batch, shuffle=True, generator=g,
                                      num_workers=workers),
    }


def _decode_loop(blobs: list[tuple[bytes, int]], frames: int, seconds: float) -> float:
    """Frames decoded per second by one process over ``blobs`` ((zstd chunk, decoded size), the
    chunks of ``frames`` frames) for about ``seconds``."""
    from numcodecs.zstd import decompress

    outs = {size: np.empty(size, np.uint8) for _, size in blobs}
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for data, size in blobs:
            decompress(data, outs[size])
        n += frames
    return n / (time.perf_counter() - t0)


def decode_ceiling(store: str, per_part: int = 20, seconds: float = 6.0) -> dict[int, float]:
    """Frames/s of the zstd decode alone of the first ``per_part`` frames of every part (image;
    depth of live frames, as the loader reads them), by 1 process and by 2 at once (summed):
    what no store loader on this machine can exceed, whatever its overheads."""
    import multiprocessing as mp

    import zarr
    from numcodecs.zstd import Zstd

    from storage.layout import ZSTD_LEVEL

    codec, blobs, n = Zstd(level=ZSTD_LEVEL), [], 0
    parts = zarr.open_group(store, mode="r")["parts"]
    for key in sorted(parts.group_keys()):
        group = parts[key]
        image = group["image"][:per_part]
        live = np.array([label == "live" for label in group["meta/label"][:len(image)].tolist()], dtype=bool)
        depth = group["depth"][:len(image)][live]
        blobs += [(codec.encode(a), a.nbytes) for arrays in (image, depth) for a in arrays]
        n += len(image)
    rates = {1: _decode_loop(blobs, n, seconds)}
    with mp.get_context("fork").Pool(2) as pool:
        rates[2] = sum(pool.starmap(_decode_loop, [(blobs, n, seconds)] * 2))
    return rates


def clone_store(src: str, dst: Path, parts: int) -> str:
    """A store of ``parts`` parts: ``src``'s one part hard-linked under new ids."""
    shutil.copytree(src, dst, copy_function=os.link)
    loc = Location.parse(str(dst))
    manifest = read_manifest(loc)
    (pid, entry), = manifest["parts"].items()
    base = dst / entry["path"]
    for k in range(1, parts):
        new = f"{pid}-{k:05d}"
        shutil.copytree(base, dst / "parts" / new, copy_function=os.link)
        manifest["parts"][new] = dict(copy.deepcopy(entry), path=f"parts/{new}")
    write_manifest(loc, manifest)
    return str(dst)


def open_times(root: Path, parts: int, before_parts: int) -> list[str]:
    """Seconds to open a store of ``parts`` tiny parts (packed columns), and of ``before_parts``
    read through the part arrays as before (that path is slow: a smaller store)."""
    one = str(root / "one.zarr")
    w = storage.DatasetWriter.open(one, {"bench": "open"})
    w.write_part("p", make_part(2, seed=0), input_checksum="x")
    out = []
    for n, label in ((parts, "packed columns"), (before_parts, "part arrays (before)")):
        store = clone_store(one, root / f"many-{n}.zarr", n)
        warm(store)
        t0 = time.perf_counter()
        if label.startswith("packed"):
            r = storage.open_dataset(store)
        else:
            with mock.patch.object(colpack, "load", lambda loc, ps, names: [None] * len(ps)):
                r = storage.open_dataset(store)
        dt = time.perf_counter() - t0
        assert len(r) == 2 * n
        out.append(f"{label}: {n} parts {dt:.2f} s ({dt / n * 1e3:.2f} ms/part)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--part-frames", type=int, default=150)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--open-parts", type=int, default=5000)
    ap.add_argument("--open-before-parts", type=int, default=300, help="parts of the store opened the old way")
    ap.add_argument("--workdir", default=None, help="default: a temporary folder, removed after")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-loader-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        store, folder = write_data(root, args.frames, args.part_frames, args.size)
        print(f"wrote {args.frames} frames {args.size}² in parts of {args.part_frames} ({time.perf_counter() - t0:.0f} s); "
              f"load {os.getloadavg()[0]:.2f}")
        n = args.frames
        print(f"bytes per frame on disk: store {disk_bytes(store) / n:,.0f} (image+depth "
              f"{sum(disk_bytes(p) for a in ('image', 'depth') for p in Path(store, 'parts').glob('*/' + a)) / n:,.0f}), "
              f"JPEG+PNG {disk_bytes(folder) / n:,.0f}")
        warm(store)
        warm(folder)
        rates: dict[tuple[str, int], float] = {}
        for workers in (int(w) for w in args.workers.split(",")):
            made = loaders(store, folder, args.batch_size, workers)  # one loader for all epochs, as in training
            for _ in range(args.epochs):  # interleaved: a change of load hits every loader alike
                for name, loader in made.items():
                    rate = epoch_rate(loader)
                    rates[name, workers] = max(rates.get((name, workers), 0.0), rate)
            print(f"  workers {workers} done, load {os.getloadavg()[0]:.2f}")
        names = list(dict.fromkeys(k for k, _ in rates))
        wlist = sorted({w for _, w in rates})
        print(f"\n| loader | " + " | ".join(f"{w} workers img/s | vs JPEG" for w in wlist) + " |")
        print("| --- | " + " | ".join("---: | ---:" for _ in wlist) + " |")
        for name in names:
            cells = [f"{rates[name, w]:,.0f} | {rates[name, w] / rates['JPEG+PNG folder', w]:.2f}x" for w in wlist]
            print(f"| {name} | " + " | ".join(cells) + " |")
        ceiling = decode_ceiling(store)
        print(f"\nzstd decode alone (image + depth, no loader): 1 process {ceiling[1]:,.0f} frames/s, 2 processes "
              f"{ceiling[2]:,.0f} ({ceiling[2] / ceiling[1]:.2f}x of one); vs JPEG+PNG with 2 workers: "
              f"{ceiling[2] / rates['JPEG+PNG folder', max(wlist)]:.2f}x at most")
        if args.open_parts:
            lines = open_times(root, args.open_parts, args.open_before_parts)
            print("\nopen a store of tiny parts: " + "; ".join(lines) + f"; load {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
