"""The one ``riffmask`` command: every stage registered, every subcommand documented, errors one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from riffmask.cli import COMMAND_MODULES, STAGES, build_parser, main

COMMANDS = [
    "spectrogram", "audio", "prep", "generate", "mask", "tiny-model", "train", "publish", "export", "eval", "sweep",
    "app",
]


def test_every_stage_is_reachable():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert sorted(choices) == sorted(COMMANDS)


def test_a_command_names_the_stage_that_registers_it():
    assert sorted(COMMAND_MODULES) == sorted(COMMANDS) and set(COMMAND_MODULES.values()) == set(STAGES)
    for command, module in COMMAND_MODULES.items():
        assert command in build_parser(command)._subparsers._group_actions[0].choices, module


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: riffmask " + command in capsys.readouterr().out


def test_console_script_reports_user_errors_in_one_line(tmp_path):
    missing = tmp_path / "missing.wav"
    result = subprocess.run(
        [sys.executable, "-m", "riffmask.cli", "spectrogram", str(missing), str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"riffmask spectrogram: error: {missing}: no such file"]
    assert not (tmp_path / "x.png").exists()


def test_known_library_noise_is_dropped_and_the_rest_kept(caplog):
    import logging

    from riffmask.common.logs import setup_logging

    setup_logging()
    diffusers_log = logging.getLogger("diffusers.models.modeling_utils")
    with caplog.at_level(logging.INFO):
        diffusers_log.warning("There are modules in AutoencoderKL that should be kept in float32: []. Casting ...")
        logging.getLogger("transformers.utils.import_utils").warning(
            "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`")
        diffusers_log.warning("There are modules in UNet that should be kept in float32: ['norm']. Casting ...")
        logging.getLogger("bitsandbytes.backends.cpu.ops").error("a real bitsandbytes error")
    assert [r.getMessage().split(".")[0] for r in caplog.records] == [
        "There are modules in UNet that should be kept in float32: ['norm']", "a real bitsandbytes error"]


_LOADED = """import sys, runpy
sys.argv = ["riffmask", *sys.argv[1:]]
try:
    runpy.run_module("riffmask.cli", run_name="__main__")
except SystemExit:
    pass
print(" ".join(m for m in ("torch", "librosa", "scipy", "numba", "diffusers") if m in sys.modules))
"""


def heavy_modules_loaded(*argv: str) -> set[str]:
    """Which heavy libraries a whole ``riffmask`` process loads for ``argv``."""
    result = subprocess.run([sys.executable, "-c", _LOADED, *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.splitlines()[-1].split())


def test_one_shot_commands_load_only_what_they_need(tmp_path):
    from conftest import tone

    from riffmask.core.audio import write_wav

    wav, png, out = tmp_path / "a.wav", tmp_path / "a.png", tmp_path / "b.wav"
    write_wav(wav, tone(440, 0.5))
    heavy_modules_loaded("spectrogram", str(wav), str(png))  # the first run may fill the codec's cache
    from riffmask.core import dft

    fast = dft.available()  # torch's FFT library, called without importing torch
    assert heavy_modules_loaded("spectrogram", str(wav), str(png)) == (set() if fast else {"torch"})
    assert heavy_modules_loaded("audio", str(png), str(out), "--phase-start", "random") == {"torch"}
    assert heavy_modules_loaded("mask", str(png), str(tmp_path / "m.png")) == set()
    assert out.is_file() and (tmp_path / "m.png").is_file()
