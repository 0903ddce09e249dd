"""One declaration per option: the core's default and check, the CLI flag, the flat flow parameter.

A config is a dataclass whose fields are declared with :func:`opt` (a default, a description,
bounds, a closed set of choices) and whose nested groups are declared with :func:`group` (a
prefix for their flat names: ``qc`` → ``qc_min_face_size``). From that one declaration:

- :func:`check_fields` validates an instance (called from ``__post_init__``): a bad value raises
  :class:`~pipeline.base.errors.ConfigError` ``parameter 'size': must be <= 1024, got 2000``;
- :func:`add_arguments` adds ``--size`` etc. to an argparse parser; its ``type`` runs the same
  check, so the CLI prints the same message (and exits 2 before any work);
- :func:`flow_parameters` gives flat, keyword-only :class:`inspect.Parameter` objects for a
  Prefect flow's signature (:func:`flat_signature`): Prefect merges run parameters one level deep,
  so ``-p epochs=1`` keeps every other default only when each field is a top-level parameter.
  Bounds and choices go to the JSON schema as ``minimum``/``enum`` (the UI shows limits and
  dropdowns) while the value is checked by the config itself, so a bad value gets the CLI's message;
- :func:`build` makes the config from flat values (a CLI namespace, a flow's keyword arguments),
  or takes a group whole (``qc=QCConfig(...)``).

A bound or a choice is checked against the flat name (``qc_min_face_size``) when the config is
built from flat values, against the field's own name when a group is made directly. An ``int``
option refuses a non-integer value (``2.5`` frames), so the stage configs need no checks of their own.

Choices may be a callable (a registry's ``names``), resolved when asked, so declaring a config
does not import the backends.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import numbers
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Iterator, Union

from pydantic import Field

from pipeline.base.errors import ConfigError

_OPT = "fas_option"
_GROUP = "fas_group"


@dataclass(frozen=True)
class Opt:
    """What :func:`opt` records about a field (see there)."""

    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple | Callable[[], list] | None = None
    cli: bool = True
    flow: bool = True
    lt: float | None = None

    def choice_list(self) -> list | None:
        return list(self.choices()) if callable(self.choices) else (list(self.choices) if self.choices else None)


def opt(default: Any = MISSING, *, help: str, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None, choices=None, cli: bool = True, flow: bool = True,
        default_factory: Any = MISSING) -> Any:
    """A dataclass field that is a user-facing option. ``cli`` / ``flow`` False keep it out of the
    CLI flags / flow parameters (execution details an entry point sets itself)."""
    meta = {_OPT: Opt(help, ge, gt, le, choices, cli, flow, lt)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def group(factory: Callable[[], Any], prefix: str) -> Any:
    """A nested config whose options appear flat as ``{prefix}_{name}``."""
    return dataclasses.field(default_factory=factory, metadata={_GROUP: prefix})


@dataclass(frozen=True)
class Flat:
    """One option as seen from outside: its flat name, where it lives, its type and default."""

    name: str
    path: tuple[str, ...]
    type: Any
    default: Any
    opt: Opt

    def as_field(self) -> Any:
        """A dataclass field declaring this option again, as it is declared here (another config
        that sets it: same default, bounds, choices and help)."""
        return dataclasses.field(default=self.default, metadata={_OPT: self.opt})


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return inspect.Parameter.empty  # required


def flat_fields(cls: type, prefix: str = "", path: tuple[str, ...] = ()) -> Iterator[Flat]:
    """Every option of ``cls`` and its groups, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _GROUP in f.metadata:
            yield from flat_fields(hints[f.name], _group_prefix(f, prefix), path + (f.name,))
        elif _OPT in f.metadata:
            yield Flat(prefix + f.name, path + (f.name,), hints[f.name], _default(f), f.metadata[_OPT])


def _inner(tp: Any) -> tuple[Any, bool]:
    """``(T, optional)`` of ``T | None``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def check_value(name: str, value: Any, o: Opt, tp: Any) -> Any:
    """``value`` if it satisfies ``o`` (bounds, choices, finiteness), else ConfigError naming ``name``."""
    if value is None:
        if _inner(tp)[1]:
            return value
        raise ConfigError(f"parameter {name!r}: a value is required")
    items = value if isinstance(value, (tuple, list)) else (value,)
    integer = _inner(tp)[0] is int
    for v in items:
        if integer and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
            raise ConfigError(f"parameter {name!r}: must be an integer, got {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"parameter {name!r}: must be a finite number, got {v!r}")
        if o.ge is not None and v < o.ge:
            raise ConfigError(f"parameter {name!r}: must be >= {o.ge:g}, got {v!r}")
        if o.gt is not None and v <= o.gt:
            raise ConfigError(f"parameter {name!r}: must be > {o.gt:g}, got {v!r}")
        if o.le is not None and v > o.le:
            raise ConfigError(f"parameter {name!r}: must be <= {o.le:g}, got {v!r}")
        if o.lt is not None and v >= o.lt:
            raise ConfigError(f"parameter {name!r}: must be < {o.lt:g}, got {v!r}")
        valid = o.choice_list()
        if valid is not None and v not in valid:
            raise ConfigError(f"parameter {name!r}: unknown value {v!r}; valid: {valid}")
    return value


def check_fields(obj: Any) -> None:
    """Check every direct option of the dataclass instance ``obj`` (groups check themselves)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if _OPT in f.metadata:
            check_value(f.name, getattr(obj, f.name), f.metadata[_OPT], hints[f.name])


def _group_prefix(f: dataclasses.Field, prefix: str) -> str:
    sub = f.metadata[_GROUP]
    return f"{prefix}{sub}_" if sub else prefix


def group_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, type]]:
    """``(key, type)`` of every group of ``cls`` and its groups: the name under which :func:`build`
    takes a ready instance of that group (``qc`` → a ``QCConfig``)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _GROUP in f.metadata:
            yield prefix + f.name, hints[f.name]
            yield from group_keys(hints[f.name], _group_prefix(f, prefix))


def build(cls: type, values: dict[str, Any], prefix: str = "", *, strict: bool = False) -> Any:
    """An instance of ``cls`` from flat ``values`` (missing names keep their defaults).

    A group may instead be given whole, as an instance under its field name (``qc=QCConfig(...)``;
    then none of its flat names may be given too). ``strict``: a name that is neither a flat option
    nor a group of ``cls`` is a ConfigError (else it is ignored: a flow's keyword arguments hold
    the parameters of several configs)."""
    if strict:
        known = {fl.name for fl in flat_fields(cls)} | {k for k, _ in group_keys(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown} of {cls.__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if _GROUP in f.metadata:
            sub = _group_prefix(f, prefix)
            given = values.get(prefix + f.name)
            if given is None:
                kwargs[f.name] = build(hints[f.name], values, sub)
                continue
            if not isinstance(given, hints[f.name]):
                raise ConfigError(f"parameter {prefix + f.name!r}: must be a {hints[f.name].__name__}, "
                                  f"got {type(given).__name__}")
            clash = sorted(fl.name for fl in flat_fields(hints[f.name], sub) if fl.name in values)
            if clash:
                raise ConfigError(f"parameter {prefix + f.name!r} given whole and in part ({clash})")
            kwargs[f.name] = given
        elif _OPT in f.metadata and prefix + f.name in values:
            v = values[prefix + f.name]
            v = tuple(v) if isinstance(v, list) else v
            kwargs[f.name] = check_value(prefix + f.name, v, f.metadata[_OPT], hints[f.name])  # flat name
    return cls(**kwargs)


DEVICES = ("cpu", "cuda")


def check_device(device: str, *, auto: bool = False) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (and ``auto`` where allowed), else ConfigError."""
    ok = device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit()) or (auto and device == "auto")
    if not ok:
        valid = DEVICES + (("auto",) if auto else ())
        raise ConfigError(f"parameter 'device': must be one of {valid} (or cuda:N), got {device!r}")
    return device


# ------------------------------------------------------------------------------ command line


def _arg_type(fl: Flat, scalar: type) -> Callable[[str], Any]:
    def parse(text: str):
        try:
            value = scalar(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if scalar is int else ' number'}: {text!r}") from None
        try:
            return check_value(fl.name, value, fl.opt, fl.type)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = scalar.__name__  # argparse names the type in its messages
    return parse


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, include: tuple[str, ...] | None = None,
                  defaults: dict[str, tuple[Any, str]] | None = None) -> None:
    """``--flag`` per CLI option of ``cls`` (dest: the flat name), or only those named in ``include``.
    ``defaults``: flat name -> (default, how the help names it) for a command whose default is
    not the config's (e.g. ``predict`` takes the face settings from the checkpoint)."""
    defaults = defaults or {}
    for fl in flat_fields(cls):
        if not fl.opt.cli or (include is not None and fl.name not in include):
            continue
        flag = "--" + fl.name.replace("_", "-")
        tp, _ = _inner(fl.type)
        valid = fl.opt.choice_list()
        kw: dict[str, Any] = {"dest": fl.name, "help": fl.opt.help}
        if fl.name in defaults:
            kw["default"], said = defaults[fl.name]
            kw["help"] += f" [default: {said}]"
        elif fl.default is inspect.Parameter.empty:
            kw["required"] = True
        else:
            kw["default"] = fl.default
            kw["help"] += f" [default: {fl.default}]" if fl.default not in (None, False, ()) else ""
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction if fl.default is True else "store_true"
        else:
            scalar = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
            kw["type"] = _arg_type(fl, scalar if scalar in (int, float) else str)
            if typing.get_origin(tp) is tuple:
                kw["nargs"] = "*"
            if valid:
                kw["metavar"] = "{" + ",".join(map(str, valid)) + "}"
        parser.add_argument(flag, **kw)


# ------------------------------------------------------------------------------ Prefect flows


def _schema_extra(o: Opt) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for key, value in (("minimum", o.ge), ("exclusiveMinimum", o.gt), ("maximum", o.le), ("exclusiveMaximum", o.lt)):
        if value is not None:
            extra[key] = value
    valid = o.choice_list()
    if valid:
        extra["enum"] = valid + ([None] if None not in valid else [])
    return extra


def flow_parameters(cls: type, *, exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """Keyword-only flow parameters, one per flow option of ``cls``, described for the UI."""
    out = []
    for fl in flat_fields(cls):
        if not fl.opt.flow or fl.name in exclude:
            continue
        tp, optional = _inner(fl.type)
        extra = _schema_extra(fl.opt)
        if extra.get("enum") and not optional:
            extra["enum"] = extra["enum"][:-1]
        if typing.get_origin(tp) is tuple:  # a list of choices: the choices constrain its items
            tp = list[typing.get_args(tp)[0]]
            extra = {"items": {"type": "string", "enum": extra.pop("enum")}, **extra} if "enum" in extra else extra
        ann = Union[tp, None] if optional else tp
        default = list(fl.default) if isinstance(fl.default, tuple) else fl.default
        # Prefect reads a parameter's description from a pydantic Field given as its default
        field = Field(... if default is inspect.Parameter.empty else default, description=fl.opt.help,
                      json_schema_extra=extra or None)
        out.append(inspect.Parameter(fl.name, inspect.Parameter.KEYWORD_ONLY, default=field, annotation=ann))
    return out


def flat_signature(*groups: list[inspect.Parameter]) -> Callable[[Callable], Callable]:
    """Give ``fn(**params)`` the flat signature ``groups`` (before ``@flow`` reads it)."""
    params = [p for g in groups for p in g]
    def required(p: inspect.Parameter) -> bool:
        return p.default is inspect.Parameter.empty or bool(getattr(p.default, "is_required", lambda: False)())

    ordered = [p for p in params if required(p)] + [p for p in params if not required(p)]

    def deco(fn: Callable) -> Callable:
        fn.__signature__ = inspect.Signature(ordered)
        fn.__annotations__ = {p.name: p.annotation for p in ordered}
        return fn

    return deco
