"""``depthseg-fas`` command line: preprocess, datasets, synth, train, evaluate, predict, inspect, HDF5."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

import storage
from depthseg import cli as depthseg_cli
from pipeline.base.errors import RunInterrupted
from pipeline.base.options import add_arguments, build
from pipeline.console import DEBUG_ENV, echo, error_message, number_type as _number
from pipeline.datasets import datasets_command
from pipeline.io.inputs import collect_items
from pipeline.run.config import PreprocessRun
from pipeline.run.html_report import sample_grid_png, write_html_report
from pipeline.run.runners import run_preprocess
from pipeline.synth import cli as synth_cli
from storage import StoreError
from storage.hdf5 import DEFAULT_MAX_BYTES, export_hdf5, import_hdf5
from storage.inspect import format_summary

log = logging.getLogger("depthseg_fas.cli")


def _add_preprocess(sub) -> None:
    p = sub.add_parser("preprocess", help="videos/images -> face crops + pseudo-depth in a zarr v3 store")
    add_arguments(p, PreprocessRun)  # every flag, default and check from pipeline.run.config
    p.add_argument("--html-report", help="also write the HTML run report here")
    p.set_defaults(func=cmd_preprocess)


def default_report_path(output: str) -> str:
    if "://" in output:
        return Path(output.rstrip("/").rsplit("/", 1)[-1] + ".report.json").name
    return str(Path(output).with_name(Path(output).name + ".report.json"))


def cmd_preprocess(args) -> int:
    run = build(PreprocessRun, vars(args))
    cfg = run.config
    inputs = collect_items(run.input, manifest=run.manifest, dataset=run.dataset,
                           allow_outside_root=run.allow_outside_root, protocol=run.protocol)
    bar = tqdm(total=len(inputs.items), unit="item", desc="preprocess")

    def on_unit(u) -> None:
        bar.set_postfix_str(f"{u.status}: {Path(u.path).name}")
        bar.update(1)

    try:
        report = run_preprocess(inputs.items, run.output, cfg, input_root=inputs.root,
                                rejected=inputs.rejected, on_unit=on_unit, replace=run.replace)
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
        write_html_report(rep, args.output, args.html_report)
    return rep, report_path


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list what a dataset adapter finds in a dataset root")
    p.add_argument("root")
    p.add_argument("--dataset", required=True)
    p.add_argument("--protocol")
    p.set_defaults(func=cmd_datasets)


def cmd_datasets(args) -> int:
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
    p.add_argument("--migrate", action="store_true",
                   help="move a store of the legacy layout (schema <= 2: manifest.json, .staging/) to "
                        "schema 3 in place (after --repair when both are given)")
    p.set_defaults(func=cmd_inspect)


def _repair(store: str) -> int:
    done = storage.repair(store)
    echo(f"repair: manifest rebuilt with {len(done['parts'])} part(s)"
         + (f", {len(done['superseded'])} superseded folder(s)" if done["superseded"] else ""))
    for why in done["damaged"]:
        echo(f"REPAIR: left out damaged part folder {why}", err=True)
    return 2 if done["damaged"] else 0


def cmd_inspect(args) -> int:
    repaired = _repair(args.store) if args.repair else 0
    if args.migrate:
        done = storage.migrate(args.store)
        echo(f"migrate: schema {done['schema']} -> {storage.SCHEMA_VERSION}, {done['parts']} part(s)")
    summ = storage.summary(args.store)
    if args.json:
        echo(json.dumps(summ, indent=2, default=str))
    else:
        echo(format_summary(summ))
    note = storage.inspect.layout_note(args.store)
    if note:
        echo(f"layout: {note}", err=args.json)
    problems = storage.verify(args.store)
    if args.grid:
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
    try:
        yield
    except (OSError, ValueError, RuntimeError) as e:
        raise StoreError(f"{what}: {e}") from e


def _export(args) -> int:
    with _hdf5_errors(f"exporting {args.store} to {args.out}"):
        export_hdf5(args.store, args.out, split=args.split)
    echo(f"wrote {args.out}")
    return 0


def _import(args) -> int:
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
    for add in (_add_preprocess, _add_datasets, _add_inspect, _add_hdf5, depthseg_cli.register,
                synth_cli.register):
        add(sub)
    return ap


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
