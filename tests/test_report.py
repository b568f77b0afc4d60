"""The HTML report: self-contained, and what headless Chromium shows is a real page with players."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import tone
from PIL import Image

from riffmask.core.audio import write_wav
from riffmask.core.codec import audio_to_image, save_image
from riffmask.core.decode import DecodeConfig
from riffmask.core.params import SpectrogramParams
from riffmask.metrics.report import ReportItem, write_generation_report, write_report

SMALL = SpectrogramParams(num_frequencies=64)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Run Debian's chromium headless with a fresh profile (the test fails if it is missing)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium is not installed: the report test needs it (Debian: apt-get install -y chromium)")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


@pytest.fixture
def generation_dir(tmp_path):
    """A folder laid out as `riffmask generate` writes it (infer/files.py), from synthetic tones."""
    out = tmp_path / "gen"
    for i, freq in enumerate((220.0, 330.0)):
        src, dst = tone(freq, 0.5), tone(freq * 1.5, 0.5)
        files = {}
        for role, name, image in (
            ("input_image", f"s{i}_input.png", audio_to_image(src, SMALL)),
            ("mask_image", f"s{i}_mask.png", audio_to_image(src, SMALL).point(lambda v: 255 - v)),
            ("output_image", f"s{i}_output.png", audio_to_image(dst, SMALL)),
        ):
            save_image(image, out / name)
            files[role] = name
        write_wav(out / f"s{i}_input.wav", src)
        write_wav(out / f"s{i}.wav", dst)
        files.update(input_audio=f"s{i}_input.wav", output_audio=f"s{i}.wav")
        sidecar = {"prompt": "ambient, saxophone", "seed": 1040 + i, "strength": 0.8, "files": files}
        (out / f"s{i}.json").write_text(json.dumps(sidecar))
    (out / "summary.json").write_text(json.dumps({"done": ["s0", "s1"], "skipped": [], "failed": []}))
    return out


def test_generation_report_is_self_contained_with_metrics(generation_dir):
    path = write_generation_report(generation_dir, decode=DecodeConfig(iterations=2, phase_start="random"))
    assert path == generation_dir / "report.html"
    page = path.read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == 10 and all(s.startswith("data:") for s in sources)  # 3 images + 2 sounds, twice
    assert page.count("<audio") == 4 and "ambient, saxophone" in page and "1041" in page
    assert re.search(r"<td>ssim</td><td>0\.\d+</td>", page) and "<td>done</td><td>2</td>" in page


def test_report_escapes_text_and_accepts_in_memory_items(tmp_path):
    item = ReportItem(
        name="<script>alert(1)</script>",
        output_image=Image.new("RGB", (8, 8), "gray"),
        output_audio=np.zeros(4410, dtype=np.float32),
        params={"prompt": "a & b"},
        metrics={"ssim": 0.5},
        error="decoder <failed>",
    )
    page = write_report(tmp_path / "r.html", [item], title="validation").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "a &amp; b" in page
    assert 'src="data:audio/wav;base64,' in page and 'src="data:image/png;base64,' in page
    assert "decoder &lt;failed&gt;" in page


def test_chromium_renders_the_report_with_audio_players(tmp_path, generation_dir):
    page = write_generation_report(generation_dir, with_metrics=False).as_uri()
    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--window-size=1280,1400", f"--screenshot={shot}", page)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[:2] == (1400, 1280)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # text, spectrograms, players: not blank
    dom = chromium(tmp_path, "--dump-dom", page).stdout
    players = re.findall(r'<audio[^>]*src="data:audio/wav;base64,[A-Za-z0-9+/=]{100,}"', dom)
    assert len(players) == 4
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', dom)) == 6
