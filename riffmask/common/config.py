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
import functools
import importlib.util
import math
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


def option(default: Any = dataclasses.MISSING, help: str = "", local: bool = False, **kwargs: Any) -> Any:  # noqa: A002
    """A dataclass field with a help text (lists and dicts get a copied default).

    ``local=True`` marks where outputs go and what is allowed (output folders, security switches such as
    ``allow_pickle``): such options come only from the command line or the user's own config, never
    from a file the toolkit reads back (see :func:`without_local`), and are no part of a result's settings.
    """
    metadata = {"help": help, "local": local}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def without_local(cls: type, mapping: dict[str, Any], source: str = "a saved config") -> dict[str, Any]:
    """``mapping`` (a config of ``cls`` as saved in a file: nested, dotted or plain keys) as dotted paths,
    minus its ``local`` options.

    What a file read back (a sidecar, a saved config: possibly someone else's) may set; also what two
    results' settings are compared on. An unknown key raises :class:`ConfigError` naming ``source``.
    """
    paths = leaf_paths(cls)
    return {k: v for k, v in _flatten(cls, mapping, source).items() if not paths[k].metadata.get("local")}


def find_config(name_or_path: str | os.PathLike, command: str | None = None) -> Path:
    """A config file by path, or a bundled preset of ``command`` by name (``paper`` ->
    ``configs/generate/paper.yaml``); a preset of another command is refused, naming that command."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml")
    if command and path.parent == Path(".") and (CONFIG_DIR / command / f"{name}.yaml").is_file():
        return CONFIG_DIR / command / f"{name}.yaml"
    owners = sorted(d.name for d in CONFIG_DIR.iterdir() if (d / f"{name}.yaml").is_file())
    mine = sorted(p.stem for p in (CONFIG_DIR / command).glob("*.yaml")) if command else []
    listed = f"presets of riffmask {command}: {', '.join(mine)}" if mine else f"riffmask {command} has no presets"
    if owners:
        raise ConfigError(
            f"config {name!r} is a preset of `riffmask {owners[0]}`, not of `riffmask {command}` ({listed})"
        )
    raise ConfigError(f"config {str(name_or_path)!r} not found (a file path, or one of the {listed})")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
    return data


@functools.cache
def _hints(cls: type) -> types.MappingProxyType:
    """The resolved field types of a config class; resolving them compiles every annotation, so once."""
    return types.MappingProxyType(typing.get_type_hints(cls))


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
    if hint is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        # YAML 1.1 reads "1e-3" (no dot) as a string; a float field takes it as the number it spells.
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if not math.isfinite(number):  # nan and inf pass every range check (nan < 0 is false)
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return number
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def unknown_key(cls: type, key: str, source: str) -> ConfigError:
    """The error for ``key``, which names no option of ``cls``: with the closest option's name."""
    paths = leaf_paths(cls)
    known = sorted({p.rsplit(".", 1)[-1] for p in paths} | set(paths))
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(known)}"
    return ConfigError(f"unknown config key {key!r} in {source}{hint}")


def override_key(word: str) -> str | None:
    """The key of a ``key=value`` word as options are named (``max-seconds`` -> ``max_seconds``), else None."""
    return word.partition("=")[0].replace("-", "_") if _OVERRIDE.match(word) else None


def option_names(cls: type) -> set[str]:
    """Every key that sets options of ``cls``: dotted paths, their sections and the options' plain names."""
    names: set[str] = set()
    for path in leaf_paths(cls):
        parts = path.split(".")
        names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        names.add(parts[-1])
    return names


def split_overrides(argv: list[str], known: set[str] | None = None) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` words (config overrides) from the rest of the command line.

    With ``known`` (see :func:`option_names`) a word is an override only when its key is one of them, so
    that a file named ``take=1.flac`` stays a file; without, every such word is. Words after ``--`` never are.
    """
    words, overrides = [], []
    for i, word in enumerate(argv):
        if word == "--":
            return words + argv[i:], overrides
        key = override_key(word)
        (overrides if key is not None and (known is None or key in known) else words).append(word)
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


def _section(hint: Any) -> type | None:
    """The dataclass of a section field (a nested config), else None."""
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def leaf_paths(cls: type) -> dict[str, Any]:
    """Every option of ``cls`` as ``{"dotted.path": field}``, sections flattened in declaration order."""
    out: dict[str, Any] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        section = _section(hints[f.name])
        if section is None:
            out[f.name] = f
        else:
            out.update({f"{f.name}.{path}": leaf for path, leaf in leaf_paths(section).items()})
    return out


def _resolve_key(cls: type, key: str, source: str) -> str:
    """The dotted path of ``key``: a dotted path as given, or a plain name that is a top-level option or the
    one option of that name in a section (``downshift`` -> ``mask.downshift``)."""
    paths = leaf_paths(cls)
    if key in paths:
        return key
    matches = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"config key {key!r} in {source} is ambiguous: write one of {', '.join(matches)}")
    raise unknown_key(cls, key, source)


def _flatten(cls: type, mapping: dict[str, Any], source: str, prefix: str = "") -> dict[str, Any]:
    """A layer's keys as dotted paths; a section may be given as a nested mapping."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and _is_section_path(cls, full):
            out.update(_flatten(cls, value, source, prefix=f"{full}."))
        else:
            out[_resolve_key(cls, full, source)] = value
    return out


def _is_section_path(cls: type, path: str) -> bool:
    return any(p.startswith(f"{path}.") for p in leaf_paths(cls))


def build_config(cls: type[T], *layers: tuple[str, dict[str, Any]]) -> T:
    """Merge ``(source name, mapping)`` layers over the defaults of ``cls``, validating each key.

    Nested sections take nested mappings (YAML), dotted keys (``mask.downshift=150``) or the plain
    option name when only one section has it (``downshift=150``).
    """
    values: dict[str, Any] = {}
    for source, mapping in layers:
        values.update(_flatten(cls, mapping, source))
    return _build(cls, values)


def _build(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        section = _section(hints[f.name])
        if section is not None:
            inner = {k[len(f.name) + 1 :]: v for k, v in values.items() if k.startswith(f"{f.name}.")}
            if inner or f.default_factory is dataclasses.MISSING:
                base = {} if f.default_factory is dataclasses.MISSING else _explicit(f.default_factory())
                kwargs[f.name] = _build(section, base | inner, f"{prefix}{f.name}.")
        elif f.name in values:
            kwargs[f.name] = _coerce(f"{prefix}{f.name}", values[f.name], hints[f.name])
    missing = [
        f"{prefix}{f.name}"
        for f in dataclasses.fields(cls)
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required config key(s): {', '.join(missing)}")
    cfg = cls(**kwargs)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def _explicit(section: Any) -> dict[str, Any]:
    """A section default's values as dotted keys (a section may default to other values than its class)."""
    return {path: _get(section, path) for path in leaf_paths(type(section))}


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def replace_options(cfg: T, **changes: Any) -> T:
    """A copy of ``cfg`` with options changed by plain name or dotted path (``downshift=0``, ``seed=3``),
    checked and validated like any other layer."""
    values = _explicit(cfg) | _flatten(type(cfg), changes, "the changed options")
    return _build(type(cfg), values)


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file (path or bundled name), then ``key=value`` words."""
    layers = []
    if path is not None:
        found = find_config(path, getattr(cls, "PRESETS", None))
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
    """Add ``--config``, trailing ``key=value`` overrides and one ``--flag`` per option of ``cls``."""
    presets = getattr(cls, "PRESETS", None)
    preset_names = sorted(p.stem for p in (CONFIG_DIR / presets).glob("*.yaml")) if presets else []
    bundled = f"; bundled: {', '.join(preset_names)}" if preset_names else ""
    parser.add_argument("--config", help=f"YAML config: a path or the name of a bundled preset{bundled}")
    add_option_flags(parser, cls, skip)


def add_option_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per option of ``cls`` (no ``--config``): for a command that shares a config's options.

    An option inside a section gets the flag of its plain name (``--downshift``) when that name is
    unique, else of its dotted path (``--validation.sampling.steps``).
    """
    # The command line's key=value words are this config's options; the entry point reads which (split_overrides).
    parser.set_defaults(config_class=cls)
    paths = leaf_paths(cls)
    names = [p.rsplit(".", 1)[-1] for p in paths]
    defaults = _defaults(cls)
    groups: dict[str, Any] = {}
    for path, f in paths.items():
        name = path.rsplit(".", 1)[-1]
        if name in skip or path in skip:
            continue
        section = path.rsplit(".", 1)[0] if "." in path else ""
        if section and section not in groups:
            groups[section] = parser.add_argument_group(
                f"{section} options", f"also as key=value: {section}.NAME=V, or NAME=V where the name is unique"
            )
        target = groups.get(section, parser)
        flag = "--" + (name if names.count(name) == 1 else path).replace("_", "-")
        default = _get(defaults, path)
        text = f.metadata.get("help", "")
        text = f"{text} (default: {default})" if default is not None or f.default is None else text
        if _hints_of_path(cls, path) is bool:
            kind = {"action": argparse.BooleanOptionalAction}
        else:
            kind = {"type": _parse_scalar, "metavar": "V"}
        target.add_argument(flag, dest=path, default=argparse.SUPPRESS, help=text, **kind)


def _defaults(cls: type) -> Any:
    """An instance of ``cls`` with every default, for help texts (required keys left unset)."""
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            section = _section(hints[f.name])
            kwargs[f.name] = _defaults(section) if section else None
    return cls(**kwargs)


def _hints_of_path(cls: type, path: str) -> Any:
    *sections, name = path.split(".")
    for part in sections:
        cls = _hints(cls)[part]
    return _hints(cls)[name]


def config_from_args(cls: type[T], args: argparse.Namespace, overrides: list[str] | None = None, **fixed: Any) -> T:
    """Resolve a config from parsed arguments: file < ``key=value`` < flags < ``fixed`` values."""
    layers = []
    if getattr(args, "config", None):
        found = find_config(args.config, getattr(cls, "PRESETS", None))
        layers.append((str(found), read_yaml(found)))
    if overrides:
        layers.append(("the command line", parse_overrides(overrides)))
    paths = leaf_paths(cls)
    flags = {k: v for k, v in vars(args).items() if k in paths}
    layers.append(("the command-line flags", flags))
    layers.append(("the command", {k: v for k, v in fixed.items() if v is not None}))
    return build_config(cls, *layers)
