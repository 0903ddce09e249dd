"""``depthseg-fas`` command line: preprocess, datasets, synth, train, evaluate, predict, inspect, HDF5."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import logging
import math
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


def _number(kind: type, *, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse ``type``: a finite ``kind`` (int/float) within bounds, else exit 2 at parse time."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _add_preprocess(sub) -> None:
    p = sub.add_parser("preprocess", help="videos/images -> face crops + pseudo-depth in a zarr v3 store")
    p.add_argument("--input", required=True, help="a video/image, a folder, a CSV manifest or a dataset root")
    p.add_argument("--output", required=True, help="store path (local folder or fsspec URL)")
    p.add_argument("--manifest", help="CSV: path,label,attack_type,subject,session,device,split")
    p.add_argument("--dataset", help="dataset adapter for --input (oulu-npu, siw, casia-fasd, ...)")
    p.add_argument("--allow-outside-root", action="store_true", help="accept CSV paths outside the input root")
    p.add_argument("--protocol", help="only the items this protocol uses, all folds unless one is named "
                                      "(oulu-npu-p3, siw-p1, cross-dataset:target=oulu-npu; see `datasets`)")
    p.add_argument("--detector", default="blazeface")
    p.add_argument("--landmarks", default="dlib68")
    p.add_argument("--every-n", type=_number(int, low=1), default=1)
    p.add_argument("--fps", type=_number(float, low=0, low_open=True))
    p.add_argument("--max-frames", type=_number(int, low=1))
    p.add_argument("--crop-scale", type=_number(float, low=0.5, high=4.0), default=1.3)
    p.add_argument("--size", type=_number(int, low=16, high=1024), default=256)
    p.add_argument("--batch-size", type=_number(int, low=1), default=64, help="faces per batched fit+render")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--workers", type=_number(int, low=0), default=0,
                   help="decode/detect/landmark worker processes (0: sequential in-process)")
    p.add_argument("--max-pixels", type=_number(int, low=1), default=100_000_000,
                   help="refuse (fail) images and video frames with more pixels (default 100 megapixels)")
    p.add_argument("--replace", action="store_true",
                   help="replace a part committed from another input under the same part id "
                        "(default: that item fails with reason part-conflict)")
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

    from pipeline.base.errors import RunInterrupted
    from pipeline.io.inputs import collect_items
    from pipeline.run.process import PreprocessConfig, run_preprocess

    cfg = PreprocessConfig(
        detector=args.detector, landmarks=args.landmarks, every_n=args.every_n, fps=args.fps,
        max_frames=args.max_frames, size=args.size, crop_scale=args.crop_scale, device=args.device,
        model_dir=args.model_dir, batch_size=args.batch_size, workers=args.workers, max_pixels=args.max_pixels,
    )
    inputs = collect_items(args.input, manifest=args.manifest, dataset=args.dataset,
                           allow_outside_root=args.allow_outside_root, protocol=args.protocol)
    bar = tqdm(total=len(inputs.items), unit="item", desc="preprocess")

    def on_unit(u) -> None:
        bar.set_postfix_str(f"{u.status}: {Path(u.path).name}")
        bar.update(1)

    try:
        report = run_preprocess(inputs.items, args.output, cfg, input_root=inputs.root,
                                rejected=inputs.rejected, on_unit=on_unit, replace=args.replace)
    except RunInterrupted as exc:
        bar.close()
        rep, report_path = _write_run_report(exc.report, args)
        c = rep["counts"]
        raise RunInterrupted(f"{c['written']} part(s) written, {c['skipped']} skipped before Ctrl-C "
                             f"(committed parts are kept); report: {report_path}; run the same command "
                             f"again to resume", report=exc.report) from None
    bar.close()
    rep, report_path = _write_run_report(report, args)
    c = rep["counts"]
    echo(f"store: {args.output}")
    echo(f"items: {c['items']} (written {c['written']}, skipped {c['skipped']}, failed {c['failed']}, "
          f"rejected {c['rejected']}); frames stored {c['frames_stored']}, without a face {c['frames_no_face']}")
    for f in rep["failures"]:
        echo(f"  FAILED {f['path']}: [{f['reason']}] {f['message']}")
    echo(f"report: {report_path}")
    return 0 if c["written"] + c["skipped"] > 0 or not c["items"] else 1


def _write_run_report(report, args) -> tuple[dict, str]:
    """Write the JSON (and HTML, when asked) run report; returns it as a dict and its path."""
    rep = report.to_dict()
    report_path = args.report or default_report_path(args.output)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(json.dumps(rep, indent=2, default=str))
    if args.html_report:
        from pipeline.run.html_report import write_html_report

        write_html_report(rep, args.output, args.html_report)
    return rep, report_path


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
    p.add_argument("--repair", action="store_true",
                   help="rebuild a lost or unreadable manifest from the parts' own commit records "
                        "(each part verified; damaged ones reported and left out, never deleted)")
    p.set_defaults(func=cmd_inspect)


def _repair(store: str) -> int:
    import storage

    done = storage.repair(store)
    echo(f"repair: manifest rebuilt with {len(done['parts'])} part(s)"
         + (f", {len(done['superseded'])} superseded folder(s)" if done["superseded"] else ""))
    for why in done["damaged"]:
        echo(f"REPAIR: left out damaged part folder {why}", err=True)
    return 2 if done["damaged"] else 0


def cmd_inspect(args) -> int:
    import storage

    repaired = _repair(args.store) if args.repair else 0
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
    return repaired


def _add_hdf5(sub) -> None:
    p = sub.add_parser("export-hdf5", help="write a store as one HDF5 file")
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("--split", help="export only this split")
    p.set_defaults(func=lambda a: _export(a))
    q = sub.add_parser("import-hdf5", help="turn an exported HDF5 file back into a store")
    q.add_argument("h5")
    q.add_argument("store", help="a new store (must not exist, or be an empty folder)")
    q.add_argument("--max-gib", type=_number(float, low=0, low_open=True), help="refuse files declaring more uncompressed data (default 64)")
    q.set_defaults(func=lambda a: _import(a))


@contextlib.contextmanager
def _hdf5_errors(what: str):
    """HDF5/file-system errors of an export or import as a StoreError (one line, exit 2)."""
    from storage import StoreError

    try:
        yield
    except (OSError, ValueError, RuntimeError) as e:
        raise StoreError(f"{what}: {e}") from e


def _export(args) -> int:
    from storage.hdf5 import export_hdf5

    with _hdf5_errors(f"exporting {args.store} to {args.out}"):
        export_hdf5(args.store, args.out, split=args.split)
    echo(f"wrote {args.out}")
    return 0


def _import(args) -> int:
    from storage.hdf5 import DEFAULT_MAX_BYTES, import_hdf5

    max_bytes = DEFAULT_MAX_BYTES if args.max_gib is None else int(args.max_gib * 2**30)
    with _hdf5_errors(f"importing {args.h5} into {args.store}"):
        import_hdf5(args.h5, args.store, max_bytes=max_bytes)
    echo(f"wrote {args.store}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="depthseg-fas", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--debug", action="store_true",
                    help=f"show the traceback of an error (also ${DEBUG_ENV}=1)")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (_add_preprocess, _add_datasets, _add_inspect, _add_hdf5):
        add(sub)
    for mod in ("depthseg.cli", "pipeline.synth.cli"):
        try:
            importlib.import_module(mod).register(sub)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    return ap


#: exit status after Ctrl-C (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130
#: set to 1 (or pass --debug) to get the traceback of an error instead of its one-line message
DEBUG_ENV = "DEPTHSEG_DEBUG"
#: errno values of an OSError that are the machine's fault, not the input's (exit 1, not 2)
_SYSTEM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EROFS})
#: arguments that name a command's main input, most specific first (for errors that name none)
_INPUT_ARGS = ("h5", "checkpoint", "input", "store", "root")


def one_line(text: str, limit: int = 2000) -> str:
    """``text`` on one line (a multi-line library message, e.g. torch's state-dict errors)."""
    flat = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def error_message(exc: BaseException, args: argparse.Namespace | None = None) -> tuple[str, int]:
    """The one-line message and exit status of an error that ended a command.

    One mapping for every command, from the project's error base classes: the project's typed
    errors (``PipelineError`` and its subclasses, the training and checkpoint errors among them;
    ``StoreError`` and its subclasses) carry the input they concern in their message and their
    own exit status; ``KeyError`` is a registry lookup of an unknown name (exit 2); an
    ``OSError`` (a file that cannot be opened, an HDF5 file h5py cannot read) is named after its
    file, or the command's input when it names none. Anything else is a bug: its type is kept
    in the message and the traceback is one ``--debug`` away.
    """
    from storage import StoreError

    from pipeline.base.errors import PipelineError

    if isinstance(exc, KeyboardInterrupt):
        detail = getattr(exc, "detail", "")
        return "interrupted" + (f": {one_line(detail)}" if detail else ""), EXIT_INTERRUPTED
    if isinstance(exc, PipelineError):
        return f"error: {one_line(exc)}", int(getattr(exc, "exit_code", 2))
    if isinstance(exc, StoreError):
        return f"store error: {one_line(exc)}", 2
    if isinstance(exc, KeyError):
        return f"error: {one_line(exc.args[0] if len(exc.args) == 1 else exc)}", 2
    subject = next((getattr(args, a) for a in _INPUT_ARGS if getattr(args, a, None)), None)
    if isinstance(exc, OSError):
        text = one_line(exc.strerror if exc.strerror and exc.filename else exc)
        name = exc.filename or subject
        code = 1 if exc.errno in _SYSTEM_ERRNOS else 2
        return f"error: {name}: {text}" if name and str(name) not in text else f"error: {text}", code
    where = f"{subject}: " if subject else ""
    return (f"error: {where}{type(exc).__name__}: {one_line(exc)} (unexpected: {DEBUG_ENV}=1 or "
            f"--debug shows the traceback)"), 1


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error that ends it is ONE line on stderr and a non-zero exit status
    (:func:`error_message`), never a traceback unless ``--debug`` / ``$DEPTHSEG_DEBUG=1``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        log.debug("%s failed", args.command, exc_info=True)
        msg, code = error_message(exc, args)
        echo(f"depthseg-fas {args.command}: {msg}", err=True)
        return code


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    sys.exit(main())
