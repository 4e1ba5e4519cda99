"""One config parser for every stage: defaults < YAML < command line.

Each stage has a config dataclass whose fields all carry a type, a default and
`metadata={"help": ...}`. A YAML file (`--config run.yaml`) holds one section
per stage, named after it (`generate:`, `simulate:`, ...), and nothing else at
the top level; a stage reads only its own section. Command-line flags
(`--key value` or `--key=value`) override both. Unknown keys, in the YAML or on
the command line, are errors.

Values from the command line are read as YAML scalars/collections, so
`--temperature 0.7`, `--use_cpu true`, `--metric_weights '{accuracy: 1}'`
and `--loss_type '[sigmoid, sft]'` all work; fields typed `str` keep the raw
text, except that `null` (or `~`) is None for a field that may be None.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from collabloop.config_error import ConfigError
from collabloop.plugins import load_plugins

__all__ = ["ConfigError", "parse_config", "config_to_dict", "save_config", "yaml_load"]


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with 1.2 scalars: only true/false are booleans (`save_strategy: no`
    stays the string "no"), and `1e-5` is a float."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def yaml_load(text: str):
    return yaml.load(text, Loader=_Yaml12Loader)


def _field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "") if f.metadata else ""


def _is_str_type(tp: Any) -> bool:
    """True for fields that accept text: str, or a union with str (TRL's enum-or-str fields)."""
    if tp is str:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return str in typing.get_args(tp)
    return False


def _coerce(name: str, raw: Any, tp: Any, source: str) -> Any:
    """Turn a YAML/CLI value into the field's type where the type is simple."""
    may_be_none = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    if isinstance(raw, str) and may_be_none and source == "command line" and raw in ("null", "~"):
        return None  # YAML's null, as `key: null` in the file gives
    if isinstance(raw, str) and _is_str_type(tp):
        return raw
    value = yaml_load(raw) if isinstance(raw, str) and source == "command line" else raw
    base = tp
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and type(None) in typing.get_args(tp):
            return None
        base = args[0] if len(args) == 1 else None
    if base is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: '{name}' must be true or false, got {raw!r}")
    if base is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{source}: '{name}' must be an integer, got {raw!r}")
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{name}' must be a number, got {raw!r}")
        value = float(value)
    if base is str and not isinstance(value, str):
        value = str(value)
    if typing.get_origin(base) is dict and not isinstance(value, dict):
        raise ConfigError(f"{source}: '{name}' must be a mapping like '{{a: 1, b: 2}}', got {raw!r}")
    if typing.get_origin(base) is list and not isinstance(value, list):
        value = [value]
    return value


def _resolved_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _unknown(key: str, known: set[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(key, sorted(known), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"{source}: unknown key '{key}'.{hint} Run with --help to list the valid keys.")


def _split_argv(argv: list[str]) -> tuple[str | None, dict[str, str], bool]:
    config_path, overrides, want_help = None, {}, False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            want_help = True
            i += 1
            continue
        if not arg.startswith("--"):
            raise ConfigError(f"command line: unexpected argument {arg!r}; settings are given as --key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise ConfigError(f"command line: --{key} needs a value")
            value = argv[i + 1]
            i += 1
        i += 1
        if key == "config":
            config_path = value
        else:
            overrides[key.replace("-", "_")] = value
    return config_path, overrides, want_help


def format_help(section: str, classes: tuple[type, ...], doc: str | None) -> str:
    lines = [
        doc.strip() + "\n" if doc else "",
        f"Usage: --config FILE.yaml (section '{section}:') and/or --key value ...\n",
    ]
    for cls in classes:
        lines.append(f"{cls.__name__}:")
        types_ = _resolved_types(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.name.startswith("_"):
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)"
            )
            tp = getattr(types_[f.name], "__name__", str(types_[f.name]))
            lines.append(f"  --{f.name} ({tp}, default {default!r})")
            if _field_help(f):
                lines.append(f"      {_field_help(f)}")
    return "\n".join(lines)


def load_yaml_section(path: str | Path, section: str) -> dict[str, Any]:
    """The stage's own section of a run YAML (empty when the file has none)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--config {path}: no such file")
    data = yaml_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: top-level key '{key}' is not a section (a mapping like 'generate:'); "
                              f"put it under the section of each stage that uses it")
    return data.get(section, {})


def parse_config(
    classes: type | tuple[type, ...],
    section: str,
    argv: list[str] | None = None,
    doc: str | None = None,
    machine_defaults: dict[str, Any] | None = None,
):
    """Build the stage's config dataclass(es) from defaults, YAML and the command line.

    Precedence: dataclass defaults < `machine_defaults` (values that depend on
    the hardware, e.g. the gloo backend on a CPU-only machine) < what the run
    gives every stage (`collabloop.roles`: who plays each role, the budget) <
    the stage's YAML section < CLI.

    Returns one instance, or a tuple when several classes are given (the DPO
    stage combines its own arguments with TRL's `DPOConfig`).
    """
    single = not isinstance(classes, tuple)
    classes = (classes,) if single else classes
    argv = sys.argv[1:] if argv is None else argv
    config_path, cli, want_help = _split_argv(argv)
    if want_help:
        print(format_help(section, classes, doc))
        raise SystemExit(0)

    field_types: dict[str, tuple[type, Any]] = {}
    for cls in classes:
        for name, tp in _resolved_types(cls).items():
            field_types.setdefault(name, (cls, tp))
    known = set(field_types)

    values: dict[str, Any] = dict(machine_defaults or {})
    if config_path is not None and section not in ("loop", "roles"):
        # who plays each role, and the run's budget
        values.update({k: v for k, v in run_defaults(config_path).items() if k in known})
    if config_path is not None:
        load_plugins(config_path)  # the task kinds and metrics of the run's own modules, before any record is read
        for key, value in load_yaml_section(config_path, section).items():
            if key not in known:
                raise _unknown(key, known, f"{config_path}, section '{section}'")
            values[key] = _coerce(key, value, field_types[key][1], f"{config_path}, section '{section}'")
    for key, value in cli.items():
        if key not in known:
            raise _unknown(key, known, "command line")
        values[key] = _coerce(key, value, field_types[key][1], "command line")

    instances = []
    for cls in classes:
        kwargs = {k: v for k, v in values.items() if field_types[k][0] is cls}
        try:
            instances.append(cls(**kwargs))
        except TypeError as e:
            raise ConfigError(f"{cls.__name__}: {e}") from None
    return instances[0] if single else tuple(instances)


def run_defaults(config_path: str | Path) -> dict[str, Any]:
    """What a run YAML gives every stage below the stage's own section: each role's model and server, and
    the run's budget (collabloop/roles.py says the order)."""
    from collabloop.loop_config import LoopConfig
    from collabloop.roles import ROLES, RolesConfig

    data = yaml_load(Path(config_path).read_text()) or {}
    out: dict[str, Any] = {}
    if isinstance(data, dict) and "loop" in data:
        loop = parse_config(LoopConfig, "loop", ["--config", str(config_path)])
        if loop.simulator_model_path:
            for role in ROLES:
                if loop.simulator_backend == "in_process":
                    out[f"{role}_model"] = f"local/{loop.simulator_model_path}"
                else:
                    out[f"{role}_model"] = f"hosted_vllm/{loop.simulator_served_name}"
                    out[f"{role}_api_base"] = loop.server_api_base
        if loop.max_cost_usd is not None:
            out["max_cost_usd"] = loop.max_cost_usd
    roles = parse_config(RolesConfig, "roles", ["--config", str(config_path)])
    for role in ROLES:
        if getattr(roles, f"{role}_model"):  # named here: its server too, so no local server is paired with it
            out[f"{role}_model"] = getattr(roles, f"{role}_model")
            out[f"{role}_api_base"] = getattr(roles, f"{role}_api_base")
    return out


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (enums and paths as strings)."""
    out = {}
    for f in dataclasses.fields(config):
        if not f.init or f.name.startswith("_"):
            continue
        out[f.name] = _plain(getattr(config, f.name))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(getattr(value, "value", value))


def save_config(path: str | Path, section: str, *configs: Any) -> None:
    """Write the resolved config beside an output, as a YAML file it can be rerun with."""
    merged: dict[str, Any] = {}
    for config in configs:
        merged.update(config_to_dict(config))
    from collabloop.jsonl import atomic_file

    with atomic_file(path) as f:
        f.write(yaml.safe_dump({section: merged}, sort_keys=False, allow_unicode=True))
