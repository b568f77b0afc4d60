"""YAML configs with ``key=value`` overrides, one source of truth per stage.

Each stage declares its options once, as a dataclass whose fields carry ``help`` metadata. From it
come the YAML keys, the command-line flags (``--strength 0.8`` and ``strength=0.8`` alike), type
checking with errors that name the bad key, and the resolved config saved next to every output.
Precedence, lowest first: dataclass defaults, ``--config`` file, ``key=value`` words, ``--flags``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from riffmask.common.errors import RiffmaskError
from riffmask.common.io import write_text_atomic

T = TypeVar("T")
_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*=")
CONFIG_DIR = Path(importlib.util.find_spec("riffmask.configs").origin).parent


class ConfigError(RiffmaskError):
    """A config that cannot be used: unknown key, wrong type, missing file or invalid value."""


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:  # noqa: A002
    """A dataclass field with a help text (lists and dicts get a copied default)."""
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def find_config(name_or_path: str | os.PathLike) -> Path:
    """A config file by path, or by name among the bundled ``configs/`` (``paper`` -> paper.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    bundled = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config {str(name_or_path)!r} not found (a file path, or one of: {', '.join(bundled)})")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
    return data


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type, converting where it is lossless (int -> float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        items = value if isinstance(value, list | tuple) else [value]
        inner = args[0] if args else Any
        return [_coerce(key, item, inner) for item in items]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; a float field takes it as the number it spells.
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _unknown(key: str, known: list[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(known)}"
    return ConfigError(f"unknown config key {key!r} in {source}{hint}")


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` words (config overrides) from the rest of the command line."""
    words, overrides = [], []
    for word in argv:
        (overrides if _OVERRIDE.match(word) else words).append(word)
    return words, overrides


def parse_overrides(words: list[str]) -> dict[str, Any]:
    """``["a=1", "b=[x, y]"]`` -> ``{"a": 1, "b": ["x", "y"]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for word in words:
        key, sep, raw = word.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {word!r} is not of the form key=value")
        out[key.strip().replace("-", "_")] = _parse_scalar(raw)
    return out


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def build_config(cls: type[T], *layers: tuple[str, dict[str, Any]]) -> T:
    """Merge ``(source name, mapping)`` layers over the defaults of ``cls``, validating each key."""
    hints = _hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for source, mapping in layers:
        for key, value in mapping.items():
            if key not in hints:
                raise _unknown(key, known, source)
            values[key] = _coerce(key, value, hints[key])
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required config key(s): {', '.join(missing)}")
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file (path or bundled name), then ``key=value`` words."""
    layers = []
    if path is not None:
        found = find_config(path)
        layers.append((str(found), read_yaml(found)))
    if overrides:
        layers.append(("the command line", parse_overrides(overrides)))
    return build_config(cls, *layers)


def config_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_yaml(cfg: Any) -> str:
    return yaml.safe_dump(config_dict(cfg), sort_keys=False, allow_unicode=True)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically), so the run can be repeated exactly."""
    write_text_atomic(path, config_yaml(cfg))


# --------------------------------------------------------------------------- argparse bridge
def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add ``--config``, trailing ``key=value`` overrides and one ``--flag`` per field of ``cls``."""
    parser.add_argument("--config", help="YAML config: a path or the name of a bundled preset in configs/")
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f.metadata.get("help", "")
        text = f"{text} (default: {default})" if f.default is not dataclasses.MISSING else text
        if hints[f.name] is bool:
            kind = {"action": argparse.BooleanOptionalAction}
        else:
            kind = {"type": _parse_scalar, "metavar": "V"}
        parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=text, **kind)


def config_from_args(cls: type[T], args: argparse.Namespace, overrides: list[str] | None = None, **fixed: Any) -> T:
    """Resolve a config from parsed arguments: file < ``key=value`` < flags < ``fixed`` values."""
    layers = []
    if getattr(args, "config", None):
        found = find_config(args.config)
        layers.append((str(found), read_yaml(found)))
    if overrides:
        layers.append(("the command line", parse_overrides(overrides)))
    names = {f.name for f in dataclasses.fields(cls)}
    flags = {k: v for k, v in vars(args).items() if k in names}
    layers.append(("the command-line flags", flags))
    layers.append(("the command", {k: v for k, v in fixed.items() if v is not None}))
    return build_config(cls, *layers)
