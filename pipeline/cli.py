"""``depthseg-fas`` command line: preprocess, datasets, synth, train, evaluate, predict, inspect, HDF5."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("depthseg_fas.cli")


def echo(msg: str, err: bool = False) -> None:
    """User-facing CLI output (results, paths); diagnostics go through logging."""
    stream = sys.stderr if err else sys.stdout
    try:
        stream.write(f"{msg}\n")
    except UnicodeEncodeError:  # a file name that is not UTF-8 (surrogate-escaped) on a strict stream
        from storage.layout import safe_text

        enc = stream.encoding or "utf-8"
        stream.write(safe_text(msg).encode(enc, "backslashreplace").decode(enc) + "\n")
    stream.flush()


def _add_preprocess(sub) -> None:
    p = sub.add_parser("preprocess", help="videos/images -> face crops + pseudo-depth in a zarr v3 store")
    p.add_argument("--input", required=True, help="a video/image, a folder, a CSV manifest or a dataset root")
    p.add_argument("--output", required=True, help="store path (local folder or fsspec URL)")
    p.add_argument("--manifest", help="CSV: path,label,attack_type,subject,session,device,split")
    p.add_argument("--dataset", help="dataset adapter for --input (oulu-npu, siw, casia-fasd, ...)")
    p.add_argument("--allow-outside-root", action="store_true", help="accept CSV paths outside the input root")
    p.add_argument("--detector", default="blazeface")
    p.add_argument("--landmarks", default="dlib68")
    p.add_argument("--every-n", type=int, default=1)
    p.add_argument("--fps", type=float)
    p.add_argument("--max-frames", type=int)
    p.add_argument("--crop-scale", type=float, default=1.3)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64, help="faces per batched fit+render")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, default=0,
                   help="decode/detect/landmark worker processes (0: sequential in-process)")
    p.add_argument("--model-dir", help="model directory (default $DEPTHSEG_MODEL_DIR, else ../shared/models)")
    p.add_argument("--report", help="run report JSON path (default <output>.report.json beside the store)")
    p.add_argument("--html-report", help="also write the HTML run report here")
    p.set_defaults(func=cmd_preprocess)


def default_report_path(output: str) -> str:
    if "://" in output:
        return Path(output.rstrip("/").rsplit("/", 1)[-1] + ".report.json").name
    return str(Path(output).with_name(Path(output).name + ".report.json"))


def cmd_preprocess(args) -> int:
    from tqdm import tqdm

    from pipeline.io.inputs import collect_items
    from pipeline.run.process import PreprocessConfig, run_preprocess

    cfg = PreprocessConfig(
        detector=args.detector, landmarks=args.landmarks, every_n=args.every_n, fps=args.fps,
        max_frames=args.max_frames, size=args.size, crop_scale=args.crop_scale, device=args.device,
        model_dir=args.model_dir, batch_size=args.batch_size, workers=args.workers,
    )
    inputs = collect_items(args.input, manifest=args.manifest, dataset=args.dataset,
                           allow_outside_root=args.allow_outside_root)
    bar = tqdm(total=len(inputs.items), unit="item", desc="preprocess")

    def on_unit(u) -> None:
        bar.set_postfix_str(f"{u.status}: {Path(u.path).name}")
        bar.update(1)

    report = run_preprocess(inputs.items, args.output, cfg, input_root=inputs.root,
                            rejected=inputs.rejected, on_unit=on_unit)
    bar.close()
    rep = report.to_dict()
    report_path = args.report or default_report_path(args.output)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(json.dumps(rep, indent=2, default=str))
    if args.html_report:
        from pipeline.run.html_report import write_html_report

        write_html_report(rep, args.output, args.html_report)
    c = rep["counts"]
    echo(f"store: {args.output}")
    echo(f"items: {c['items']} (written {c['written']}, skipped {c['skipped']}, failed {c['failed']}, "
          f"rejected {c['rejected']}); frames stored {c['frames_stored']}, without a face {c['frames_no_face']}")
    for f in rep["failures"]:
        echo(f"  FAILED {f['path']}: [{f['reason']}] {f['message']}")
    echo(f"report: {report_path}")
    return 0 if c["written"] + c["skipped"] > 0 or not c["items"] else 1


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list what a dataset adapter finds in a dataset root")
    p.add_argument("root")
    p.add_argument("--dataset", required=True)
    p.add_argument("--protocol")
    p.set_defaults(func=cmd_datasets)


def cmd_datasets(args) -> int:
    from pipeline.datasets import datasets_command

    echo(datasets_command(args.root, args.dataset, args.protocol))
    return 0


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="summary and integrity check of a store")
    p.add_argument("store")
    p.add_argument("--grid", help="write a PNG grid of samples here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args) -> int:
    import storage

    summ = storage.summary(args.store)
    if args.json:
        echo(json.dumps(summ, indent=2, default=str))
    else:
        from storage.inspect import format_summary

        echo(format_summary(summ))
    problems = storage.verify(args.store)
    if args.grid:
        from pipeline.run.html_report import sample_grid_png

        Path(args.grid).write_bytes(sample_grid_png(storage.open_dataset(args.store)))
        echo(f"grid: {args.grid}")
    if problems:
        for p in problems:
            echo(f"INTEGRITY ERROR: {p}", err=True)
        return 2
    echo("integrity: all parts match the manifest checksums")
    return 0


def _add_hdf5(sub) -> None:
    p = sub.add_parser("export-hdf5", help="write a store as one HDF5 file")
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("--split", help="export only this split")
    p.set_defaults(func=lambda a: _export(a))
    q = sub.add_parser("import-hdf5", help="turn an exported HDF5 file back into a store")
    q.add_argument("h5")
    q.add_argument("store")
    q.set_defaults(func=lambda a: _import(a))


def _export(args) -> int:
    from storage.hdf5 import export_hdf5

    export_hdf5(args.store, args.out, split=args.split)
    echo(f"wrote {args.out}")
    return 0


def _import(args) -> int:
    from storage.hdf5 import import_hdf5

    import_hdf5(args.h5, args.store)
    echo(f"wrote {args.store}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="depthseg-fas", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (_add_preprocess, _add_datasets, _add_inspect, _add_hdf5):
        add(sub)
    for mod in ("depthseg.cli", "pipeline.synth.cli"):
        try:
            __import__(mod, fromlist=["register"]).register(sub)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from pipeline.base.errors import PipelineError

    try:
        return int(args.func(args) or 0)
    except (PipelineError, KeyError) as exc:
        echo(f"depthseg-fas {args.command}: error: {exc}", err=True)
        return 2
    except Exception as exc:  # StoreError and friends: a clear one-line message
        from storage import StoreError

        if isinstance(exc, StoreError):
            echo(f"depthseg-fas {args.command}: store error: {exc}", err=True)
            return 2
        raise


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    sys.exit(main())
