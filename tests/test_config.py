"""Configs: YAML + key=value + flags resolve in order, bad keys and types are named, output is saved."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

from riffmask.common.config import (
    ConfigError,
    add_config_arguments,
    config_from_args,
    load_config,
    option,
    option_names,
    save_config,
    split_overrides,
)
from riffmask.common.io import atomic_path, inside, safe_stem


@dataclass
class Demo:
    steps: int = option(50, help="steps")
    strength: float = option(0.8, help="strength")
    mode: Literal["paper", "riffusion"] = option("paper", help="mode")
    fast: bool = option(False, help="fast")
    prompts: list[str] = option(["a"], help="prompts")
    seed: int | None = option(None, help="seed")

    def validate(self) -> None:
        if not 0 < self.strength <= 1:
            raise ConfigError(f"strength must be in (0, 1], got {self.strength}")


def test_layers_resolve_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 10\nstrength: 0.5\nprompts: [x, y]\n")
    cfg = load_config(Demo, path, ["strength=1", "seed=3"])
    assert (cfg.steps, cfg.strength, cfg.prompts, cfg.seed) == (10, 1.0, ["x", "y"], 3)
    assert isinstance(cfg.strength, float)
    assert load_config(Demo, None, ["strength=1e-3"]).strength == 0.001

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Demo)
    args = parser.parse_args(["--config", str(path), "--steps", "7", "--fast"])
    cfg = config_from_args(Demo, args, ["steps=99", "mode=riffusion"])
    assert (cfg.steps, cfg.fast, cfg.mode, cfg.strength) == (7, True, "riffusion", 0.5)


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown config key 'step'.*did you mean 'steps'"):
        load_config(Demo, None, ["step=3"])
    with pytest.raises(ConfigError, match="steps: expected int"):
        load_config(Demo, None, ["steps=many"])
    with pytest.raises(ConfigError, match="mode: 'jazz' is not one of"):
        load_config(Demo, None, ["mode=jazz"])
    with pytest.raises(ConfigError, match="strength must be in"):
        load_config(Demo, None, ["strength=2"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(Demo, None, ["=3"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Demo, "no-such-preset")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(Demo, None, ["prompts=[p, q]"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(Demo, tmp_path / "out" / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["prompts"] == ["p", "q"]


def test_overrides_are_split_from_other_words():
    words, overrides = split_overrides(["generate", "a.wav", "strength=0.5", "--out", "o", "lora.scale=1"])
    assert words == ["generate", "a.wav", "--out", "o"]
    assert overrides == ["strength=0.5", "lora.scale=1"]


def test_only_known_keys_are_overrides_and_nothing_after_dashes():
    from riffmask.infer.config import GenerateConfig

    known = option_names(GenerateConfig)
    argv = ["generate", "take=1.flac", "strength=0.5", "mask.downshift=3", "max-seconds=4", "--", "seed=2.wav"]
    words, overrides = split_overrides(argv, known)
    assert words == ["generate", "take=1.flac", "--", "seed=2.wav"]
    assert overrides == ["strength=0.5", "mask.downshift=3", "max-seconds=4"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
    old_umask = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("new")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o644  # the permissions of any new file, not mkstemp's 0600


def test_names_from_data_cannot_escape(tmp_path):
    assert safe_stem("../../etc/passwd") == "passwd"
    assert safe_stem("my song (live).mp3") == "my_song_live_.mp3"
    assert safe_stem("...") == "item"
    assert inside(tmp_path, "a/b.png") == (tmp_path / "a" / "b.png").resolve()
    with pytest.raises(ValueError, match="escape"):
        inside(tmp_path, "../x.png")
