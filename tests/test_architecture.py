"""The house rules, checked: one ``riffmask`` namespace in the wheel, imports that follow the layers
(import-linter's contract in pyproject.toml), and the training recipe launched from an installed wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import test_train_support as support
from test_train_support import ROOT, as_words, overrides, script_env

prepared_dir = support.prepared_dir  # the shared session fixture


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps .`` of this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (found,) = out.glob("riffmask-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel unpacked as site-packages would hold it."""
    tree = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tree)
    return tree


def test_the_wheel_holds_the_riffmask_namespace_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/", 1)[0] for n in names} == {"riffmask", wheel.name.split("-py")[0] + ".dist-info"}
    for module in ("core/codec.py", "core/decode/griffin_lim.py", "common/config.py", "cli/__main__.py",
                   "data_prep/dataset.py", "infer/pipeline.py", "train/dreambooth.py", "metrics/fad.py",
                   "configs/generate/paper.yaml", "configs/train/cpu_smoke.yaml", "configs/prep/paper.yaml",
                   "configs/accelerate/multi_gpu.yaml"):  # fmt: skip
        assert f"riffmask/{module}" in names


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tree))
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    return subprocess.run([lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True)  # fmt: skip


def test_imports_follow_the_layers_and_a_wrong_arrow_fails(installed, tmp_path):
    result = lint_imports(installed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout
    broken = tmp_path / "broken"
    shutil.copytree(installed, broken)
    (broken / "riffmask" / "core" / "upward.py").write_text("from riffmask.cli import main\n")
    result = lint_imports(broken)
    assert result.returncode != 0 and "riffmask.core.upward -> riffmask.cli" in result.stdout


def test_the_recipe_runs_as_a_module_of_the_installed_wheel(installed, prepared_dir, tiny_model_dir, tmp_path):
    env = script_env(PYTHONPATH=str(installed), ACCELERATE_USE_CPU="1")
    where = subprocess.run([sys.executable, "-c", "import riffmask.train.dreambooth as m; print(m.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert where.stdout.strip().startswith(str(installed))
    values = overrides(prepared_dir, tiny_model_dir, tmp_path / "run", max_train_steps=2)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "riffmask.train.dreambooth",
           "--config", "cpu_smoke", *as_words(values)]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "run" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
