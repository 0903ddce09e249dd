"""One declaration per option (pipeline.base.options): the CLI flags and the flat flow parameters
are generated from the configs, so every default and every check is the same in all three."""

from __future__ import annotations

import functools
import inspect

import pytest

from depthseg.config import BenchmarkRun, EvaluateConfig, TrainRun
from pipeline.base.errors import ConfigError
from pipeline.base.options import build, flat_fields
from pipeline.cli import build_parser
from pipeline.run.config import PreprocessConfig, PreprocessRun
from storage.layout import config_hash

pytest.importorskip("prefect")
from flows.benchmark import benchmark as benchmark_flow  # noqa: E402
from flows.evaluate import evaluate as evaluate_flow  # noqa: E402
from flows.params import RunnerOptions  # noqa: E402
from flows.preprocess import preprocess as preprocess_flow  # noqa: E402
from flows.train import train as train_flow  # noqa: E402

REQUIRED = {"input": "in", "output": "out", "store": "s", "out_dir": "o", "checkpoint": "c"}
#: command, the config its flags come from, the flow, the options every CLI call must give
CASES = [
    ("preprocess", PreprocessRun, preprocess_flow, ["--input", "in", "--output", "out"]),
    ("train", TrainRun, train_flow, ["--store", "s", "--out-dir", "o"]),
    ("evaluate", EvaluateConfig, evaluate_flow, ["--checkpoint", "c", "--store", "s"]),
]


def _get(obj, path):
    return functools.reduce(getattr, path, obj)


def _flow_default(flow, name):
    default = inspect.signature(flow.fn).parameters[name].default
    return getattr(default, "default", default)


@pytest.mark.parametrize("command, cls, flow, argv", CASES, ids=[c[0] for c in CASES])
def test_a_default_exists_once(command, cls, flow, argv):
    args = vars(build_parser().parse_args([command, *argv]))
    core = build(cls, {f.name: REQUIRED[f.name] for f in flat_fields(cls) if f.default is inspect.Parameter.empty})
    flow_names = set(inspect.signature(flow.fn).parameters)
    checked = 0
    for fl in flat_fields(cls):
        if fl.default is inspect.Parameter.empty:
            continue
        normal = list(fl.default) if isinstance(fl.default, tuple) else fl.default
        assert _get(core, fl.path) == fl.default, fl.name
        if fl.opt.cli:
            assert (list(args[fl.name]) if isinstance(args[fl.name], tuple) else args[fl.name]) == normal, fl.name
        if fl.opt.flow:
            assert _flow_default(flow, fl.name) == normal, fl.name
        assert (fl.name in flow_names) == fl.opt.flow, fl.name
        checked += 1
    assert checked >= 6


def test_defaults_chosen_for_cli_and_flows():
    """The defaults that disagreed before (README "Defaults"): 30 epochs, resume off, device auto
    for train and evaluate; the CLI-only options are flow parameters too."""
    assert _flow_default(train_flow, "epochs") == 30 and _flow_default(train_flow, "resume") is False
    args = vars(build_parser().parse_args(["train", "--store", "s", "--out-dir", "o"]))
    assert args["epochs"] == 30 and args["resume"] is False
    for name in ("encoder_weights",):
        assert name in inspect.signature(train_flow.fn).parameters
    for name in ("dev_store", "batch_size"):
        assert name in inspect.signature(evaluate_flow.fn).parameters
    for name in ("score_threshold", "fit_iterations", "qc_min_blur", "qc_drop"):  # reachable at last
        assert name in inspect.signature(preprocess_flow.fn).parameters
        assert f"--{name.replace('_', '-')}" in build_parser()._subparsers._group_actions[0].choices[
            "preprocess"].format_help()


def test_flow_parameters_are_flat_and_described():
    for flow in (preprocess_flow, train_flow, evaluate_flow, benchmark_flow):
        schema = flow.parameters.model_dump()
        assert "params" not in schema["properties"]
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{flow.name}.{name} has no description"
    props = preprocess_flow.parameters.model_dump()["properties"]
    assert "blazeface" in props["detector"]["enum"] and "dlib68" in props["landmarks"]["enum"]
    assert "oulu-npu" in props["dataset"]["enum"] and props["task_runner"]["enum"] == ["thread", "process", "dask"]
    assert props["size"]["minimum"] == 16 and props["size"]["maximum"] == 1024
    tprops = train_flow.parameters.model_dump()["properties"]
    assert "deeplabv3plus" in tprops["arch"]["enum"] and "ce+l1" in tprops["loss"]["enum"]


def test_one_override_keeps_the_other_defaults():
    """What Prefect does with a run's parameters: bind them to the flow's signature and validate."""
    from prefect.utilities.callables import get_call_parameters

    params = train_flow.validate_parameters(get_call_parameters(train_flow.fn, (), {"store": "s", "out_dir": "o",
                                                                                    "epochs": "1"}))
    run = build(TrainRun, params)
    assert run.config.epochs == 1 and run.config.input_size == 256 and run.config.batch_size == 32
    assert run.config.arch == "pspnet" and run.test_split == "test"


@pytest.mark.parametrize("command, flow, argv, bad, message", [
    ("preprocess", preprocess_flow, ["--input", "in", "--output", "out"], ("size", "2000"),
     "parameter 'size': must be <= 1024, got 2000"),
    ("preprocess", preprocess_flow, ["--input", "in", "--output", "out"], ("detector", "mtcnn"),
     "parameter 'detector': unknown value 'mtcnn'"),
    ("preprocess", preprocess_flow, ["--input", "in", "--output", "out"], ("qc_drop", "wobbly"),
     "parameter 'qc_drop': unknown value 'wobbly'"),
    ("train", train_flow, ["--store", "s", "--out-dir", "o"], ("epochs", "0"), "parameter 'epochs': must be >= 1"),
    ("train", train_flow, ["--store", "s", "--out-dir", "o"], ("arch", "vit"), "parameter 'arch': unknown value 'vit'"),
])
def test_a_bad_value_gives_the_same_message(command, flow, argv, bad, message, capsys):
    name, value = bad
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([command, *argv, f"--{name.replace('_', '-')}", value])
    assert stop.value.code == 2
    cli_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in cli_line
    flow_value = [value] if name == "qc_drop" else (int(value) if value.isdigit() else value)
    with pytest.raises(ConfigError) as err:
        required = {f.name: REQUIRED[f.name] for f in flat_fields({"preprocess": PreprocessRun, "train": TrainRun}[
            command]) if f.default is inspect.Parameter.empty}
        flow.fn(**required, **{name: flow_value})  # the flow body itself: its first step builds the config
    assert message in str(err.value)
    assert cli_line.endswith(str(err.value))


def test_runner_options_are_checked():
    with pytest.raises(ConfigError, match="task_runner"):
        RunnerOptions(task_runner="slurm")


def test_store_config_hash_unchanged():
    """The stored config keeps its form and hash; a change would orphan every store. Pinned: the
    hashes of labels version 2, and, without ``label_version``, those of the issue-13 detection
    defaults (floor 20 px, fit-free pose QC thresholds, confirmation: they store different frames),
    so refactoring the options cannot move the hash. Deliberate changes: issue 13's (main a4cd58f had
    65b365c5ef1a739c for the default config, 4f188e111928552a for the demo's), then the default
    landmarks dlib68 -> mediapipe68 (2026-12-02): a config naming dlib68 kept its hash, so stores
    made with the former default resumed with ``--landmarks dlib68``; then the ``border-cut`` QC flag
    (``qc.max_face_outside``, 2026-12-02): every stored config gains it, so a store made before it
    (default e4f01ecf450e4ac2 / 7ca9b6af975627b9, demo e0772685e54b1854) is refused naming the
    differing key rather than mixing parts with and without the flag (README: demo config dfb56bb92f8e4e65)."""
    for cfg, v1, v2 in ((PreprocessConfig.flat(landmarks="dlib68"), "ec13356b75400881", "d2650c95eb3259d2"),
                        (PreprocessConfig.flat(landmarks="dlib68", size=128, every_n=3), "3989c2321e2ec487",
                         "c9a89822539a21bf"),
                        (PreprocessConfig(), "717eb55ebbd865c1", "bf237ff66cd462c4"),
                        (PreprocessConfig.flat(size=128, every_n=3), "5bb5e7ef5724ee49", "dfb56bb92f8e4e65")):
        out = cfg.output_config()
        assert out["label_version"] == 2
        assert config_hash(out) == v2
        assert config_hash({k: v for k, v in out.items() if k != "label_version"}) == v1
    out = PreprocessConfig().output_config()
    assert set(out) == {"detector", "landmarks", "every_n", "fps", "max_frames", "size", "crop_scale",
                        "score_threshold", "min_face_size", "fit_iterations", "depth_far_value", "qc", "kind",
                        "label_version"}
    assert PreprocessConfig.from_dict({**out, "model_dir": None}) == PreprocessConfig()


def test_deployment_defaults_fit_the_flat_flow_parameters():
    """prefect.yaml's parameters are flat and valid for each flow's schema (what the server enforces)."""
    import jsonschema
    import yaml

    from tests.conftest import REPO

    flows = {"preprocess": preprocess_flow, "train": train_flow, "evaluate": evaluate_flow,
             "benchmark": benchmark_flow}
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert len(deployments) == 4
    for dep in deployments:
        flow = flows[dep["entrypoint"].rsplit(":", 1)[1]]
        jsonschema.validate(dep["parameters"], flow.parameters.model_dump())
        build({"preprocess": PreprocessRun, "train": TrainRun, "evaluate": EvaluateConfig,
               "benchmark": BenchmarkRun}[flow.name], dep["parameters"])  # the config accepts them too


BENCH_ARGV = ["--datasets", "oulu-npu", "--roots", "r", "--protocol", "oulu-npu-p3"]


@pytest.mark.parametrize("bad, message", [
    (("epochs", "0"), "parameter 'epochs': must be >= 1"),
    (("size", "2000"), "parameter 'size': must be <= 1024, got 2000"),
    (("datasets", "oulu"), "parameter 'datasets': unknown value 'oulu'"),
])
def test_benchmark_options_are_train_and_preprocess_options(bad, message, capsys):
    """The benchmark's settings are declared as train's/preprocess's fields: same defaults, same
    checks, the same message from its CLI and its flow."""
    for name in ("epochs", "arch", "lr", "device"):
        assert _flow_default(benchmark_flow, name) == _flow_default(train_flow, name)
    for name in ("size", "detector", "every_n"):
        assert _flow_default(benchmark_flow, name) == _flow_default(preprocess_flow, name)
    name, value = bad
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["benchmark", *BENCH_ARGV, f"--{name.replace('_', '-')}", value])
    assert stop.value.code == 2
    cli_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in cli_line
    flat = {"datasets": ["oulu-npu"], "roots": ["r"], "protocol": "oulu-npu-p3"}
    with pytest.raises(ConfigError) as err:
        benchmark_flow.fn(**{**flat, name: [value] if name == "datasets" else int(value)})
    assert message in str(err.value) and cli_line.endswith(str(err.value))


def test_benchmark_needs_one_root_per_dataset():
    with pytest.raises(ConfigError, match="parameter 'roots': give one per dataset"):
        build(BenchmarkRun, {"datasets": ["oulu-npu", "siw"], "roots": ["a"], "protocol": "cross-dataset"})
