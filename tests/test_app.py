"""The studio (``riffmask app``): its named API through gradio_client against an app launched here on
the tiny model, the model cache, and one end-to-end run in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import wait
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SMALL, SMALL_FLAGS, SR, small_config, tone
from PIL import Image

from riffmask.cli import main as riffmask
from riffmask.common.errors import RiffmaskError

gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from riffmask.app.models import leaves  # noqa: E402
from riffmask.app.studio import Cancelled, Studio  # noqa: E402
from riffmask.app.ui import build_app, launch, read_auth  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
#: Small uploads cap, so that the "huge file" case costs a megabyte, not a hundred.
UPLOAD_MB = 1.0


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def write(path: Path, audio: np.ndarray) -> Path:
    sf.write(str(path), audio, SR, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def sound(tmp_path_factory) -> Path:
    """A chord with a rhythm, 1.2 s: something for the mask to find."""
    t = np.arange(int(1.2 * SR)) / SR
    audio = (tone(220, 1.2) + tone(330, 1.2, amp=0.3)) * (0.6 + 0.4 * np.sign(np.sin(2 * np.pi * 3 * t)))
    return write(tmp_path_factory.mktemp("sound") / "chord.wav", audio.astype(np.float32) * 0.8)


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """(studio, URL) of an app on the tiny model with the test's small settings, for the whole module."""
    out = tmp_path_factory.mktemp("takes")
    studio = Studio(small_config(tiny_model_dir, out=str(out)))
    app = build_app(studio)
    launch(app, studio, port=None, max_upload_mb=UPLOAD_MB, block=False)
    yield studio, app.local_url
    app.close()


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(served[1], verbose=False)


def generate(client: Client, sound: Path, **settings):
    """The /generate call a script would make; returns (wav, ..., sidecar, scores, files)."""
    return client.predict(audio=handle_file(str(sound)), api_name="/generate", **settings)


def test_the_api_has_the_three_named_endpoints_with_cli_names(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/spectrogram", "/mask", "/generate"} <= set(api)
    names = lambda e: [p["parameter_name"] for p in api[e]["parameters"]]  # noqa: E731
    assert names("/spectrogram") == ["audio", "start", "duration"]
    assert names("/mask") == ["image", "invert", "brightness", "contrast", "downshift"]
    assert names("/generate")[:8] == [
        "audio", "prompt", "negative_prompt", "strength", "guidance", "steps", "seed", "num_variations",
    ]  # fmt: skip
    assert {"start", "duration", "iterations", "phase_start", "model", "lora", "lora_scale"} <= set(
        names("/generate")
    )


def test_mask_is_bit_identical_to_riffmask_mask(client, sound, tmp_path):
    spectrogram = client.predict(audio=handle_file(str(sound)), start=0.2, duration=0.8, api_name="/spectrogram")
    assert Image.open(spectrogram).size == (88, SMALL["num_frequencies"])  # 81 frames, to a multiple of 8
    for values in ({"invert": 1, "brightness": 0.05, "contrast": 200, "downshift": 30},
                   {"invert": 0.5, "brightness": -1, "contrast": 5, "downshift": 0}):  # fmt: skip
        mask = client.predict(image=handle_file(spectrogram), api_name="/mask", **values)
        flags = [f"--{k}={v}" for k, v in values.items()]
        assert riffmask(["mask", spectrogram, str(tmp_path / "cli.png"), *flags]) == 0
        assert np.array_equal(pixels(mask), pixels(tmp_path / "cli.png"))
    assert pixels(mask).any() and not np.array_equal(pixels(mask), pixels(spectrogram))


def test_generate_is_byte_identical_to_riffmask_generate_and_its_folder_reopens(client, served, sound, tmp_path):
    studio, _ = served
    settings = {"prompt": "jazz, saxophone", "steps": 5, "seed": 7, "strength": 0.9, "downshift": 20, "duration": 1.0}
    wav, input_wav, output_png, input_png, mask_png, sidecar, scores, files = generate(client, sound, **settings)
    cli = tmp_path / "cli"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    assert riffmask(["generate", str(sound), "--model", sidecar["model"], *SMALL_FLAGS, *flags, "--out", str(cli)]) == 0
    assert Path(wav).read_bytes() == (cli / "chord.wav").read_bytes()
    assert Path(input_wav).read_bytes() == (cli / "chord_input.wav").read_bytes()
    for mine, role in ((output_png, "output"), (input_png, "input"), (mask_png, "mask")):
        assert np.array_equal(pixels(mine), pixels(cli / f"chord_{role}.png"))
    # The spectrogram the page shows is the one generate used.
    shown = client.predict(audio=handle_file(str(sound)), start=0, duration=1.0, api_name="/spectrogram")
    assert np.array_equal(pixels(shown), pixels(input_png))
    # Written to --out in generate's layout, downloadable, and reopened by the commands.
    name = sidecar["files"]["output_audio"].removesuffix(".wav")
    assert {Path(f).name for f in files} == {f"{name}{s}" for s in
                                             (".wav", ".json", "_input.wav", "_input.png", "_output.png", "_mask.png")}
    assert (studio.out / f"{name}.wav").read_bytes() == Path(wav).read_bytes()
    assert scores[0]["take"] == name and 0 < scores[0]["chroma"] <= 1 and -1 <= scores[0]["ssim"] <= 1
    again = tmp_path / "again"
    assert riffmask(["generate", "--like", str(studio.out / f"{name}.json"), "--out", str(again)]) == 0
    assert (again / f"{Path(sidecar['input']).stem}.wav").read_bytes() == Path(wav).read_bytes()
    assert riffmask(["eval", "pairs", str(studio.out), "--iterations", "2", "--json", str(tmp_path / "p.json")]) == 0
    assert name in (tmp_path / "p.json").read_text()
    # "Use these settings" gives back the take's settings and its sound.
    used, source = studio.take_settings(name)
    assert {k: used[k] for k in ("steps", "seed", "strength", "downshift", "duration")} == {
        "steps": 5, "seed": 7, "strength": 0.9, "downshift": 20, "duration": 1.0}  # fmt: skip
    assert used["prompt"] == ["jazz, saxophone"] and source.read_bytes() == sound.read_bytes()


@pytest.mark.parametrize(
    "case, problem",
    [
        ("empty", "empty"),
        ("not audio", "not a readable audio file"),
        ("silent", "silent"),
        ("too short", "too short"),
        ("too long a part", "over max_seconds"),
        ("too long", "too long"),
        ("huge", "exceeds the maximum file size|too large|maximum"),
    ],
)
def test_bad_uploads_get_an_error_and_the_next_request_works(client, sound, tmp_path, case, problem):
    settings = {}
    if case == "empty":
        path = tmp_path / "empty.wav"
        path.write_bytes(b"")
    elif case == "not audio":
        path = tmp_path / "notes.wav"
        path.write_text("shopping list: milk, eggs\n")
    elif case == "silent":
        path = write(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32))
    elif case == "too short":  # under one spectrogram column; a 0.05 s click is fine, as in `riffmask generate`
        path = write(tmp_path / "click.wav", tone(440, 0.005))
    elif case == "too long a part":
        path, settings = sound, {"duration": 61.0}
    elif case == "too long":  # 601 s at 1 kHz, 8 bits: long, yet under the upload cap
        path = tmp_path / "hours.wav"
        sf.write(str(path), np.full(601_000, 0.5, dtype=np.float32), 1000, subtype="PCM_U8")
    else:  # over the upload cap
        path = write(tmp_path / "huge.wav", tone(440, 1.2 * UPLOAD_MB * 2**20 / 2 / SR))
    with pytest.raises((AppError, ValueError, Exception), match=problem):
        client.predict(audio=handle_file(str(path)), api_name="/spectrogram", **settings)
    assert client.predict(audio=handle_file(str(sound)), api_name="/spectrogram") is not None


def test_two_generations_at_once_both_complete(client, sound):
    jobs = [client.submit(audio=handle_file(str(sound)), seed=s, steps=3, duration=0.7, api_name="/generate")
            for s in (1, 2)]  # fmt: skip
    wait([j.future for j in jobs], timeout=300)
    results = [job.result() for job in jobs]
    assert [r[5]["seed"] for r in results] == [1, 2]
    assert Path(results[0][0]).read_bytes() != Path(results[1][0]).read_bytes()


def test_a_model_that_cannot_load_is_reported_and_the_app_goes_on(client, served, sound, tiny_model_dir):
    studio, _ = served
    missing = str(tiny_model_dir.parent / "no-such-model")
    with pytest.raises(AppError, match="cannot load model"):
        generate(client, sound, model=missing, steps=3, duration=0.7)
    with pytest.raises(RiffmaskError, match="cannot load model") as caught:
        studio.load({"model": missing})
    assert riffmask(["generate", "--model", missing, "--out", "unused", __file__]) == 2  # the CLI's own message
    assert "no-such-model" in str(caught.value)
    assert generate(client, sound, steps=3, duration=0.7)[5]["model"] == str(tiny_model_dir)


def test_loras_and_scales_change_without_reloading_the_base(served, sound, tiny_model_dir, tmp_path):
    import torch

    from riffmask.infer.tiny import build_tiny_components
    from riffmask.train.lora import lora_config, save_lora

    parts = build_tiny_components(seed=0)
    parts["unet"].add_adapter(lora_config(4, 4.0, 0.0, ["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(0)
    for name, param in parts["unet"].named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    save_lora(tmp_path / "lora", parts["unet"], parts["text_encoder"], False, 4.0, kohya=True)
    studio = Studio(small_config(tiny_model_dir, out=str(tmp_path / "out"), duration=0.7))

    def output(**settings) -> np.ndarray:
        return pixels(studio.generate(str(sound), {"steps": 3, **settings})[0].files["output_image"]).astype(int)

    base = output()
    unet = studio.models.pipeline(studio.config({})).unet
    with_lora = output(lora=[str(tmp_path / "lora")])
    scaled_to_zero = output(lora=[str(tmp_path / "lora")], lora_scale=[0.0])
    assert np.abs(with_lora - base).max() > 10 and np.abs(scaled_to_zero - base).max() <= 1
    assert np.array_equal(output(), base)  # LoRA off again: the base model, exactly
    assert studio.models.pipeline(studio.config({})).unet is unet  # never reloaded
    with pytest.raises(RiffmaskError, match="missing-lora: no such LoRA file or folder"):
        output(lora=[str(tmp_path / "missing-lora")])
    assert np.array_equal(output(), base)


def test_cancel_stops_between_steps_and_writes_nothing(served, sound):
    studio, _ = served
    before = sorted(studio.out.glob("*.json"))

    def on_step(step: int, total: int) -> None:
        if step == 2:
            raise Cancelled(f"cancelled after {step - 1} of {total} steps")

    with pytest.raises(Cancelled, match="after 1 of"):
        studio.generate(str(sound), {"steps": 5, "duration": 0.7}, on_step)
    assert sorted(studio.out.glob("*.json")) == before


def test_auth_from_a_pair_or_a_file(tmp_path):
    assert read_auth("ann:secret") == [("ann", "secret")]
    (tmp_path / "users").write_text("# studio users\nann:secret\nbob:pa:ss\n")
    assert read_auth(str(tmp_path / "users")) == [("ann", "secret"), ("bob", "pa:ss")]
    with pytest.raises(RiffmaskError, match="--auth"):
        read_auth("no-colon")


def test_the_command_binds_loopback_by_default():
    from riffmask.cli import build_parser
    from riffmask.common.config import config_dict, config_from_args
    from riffmask.infer.config import GenerateConfig

    args = build_parser().parse_args(["app", "--model", "m", "--lora", "a", "--lora", "b", "--downshift", "9"])
    assert (args.host, args.share, args.auth) == ("127.0.0.1", False, None)
    options = leaves(config_dict(config_from_args(GenerateConfig, args, [])))
    assert (options["model"], options["lora"], options["downshift"]) == ("m", ["a", "b"], 9)


# --------------------------------------------------------------------------- the page, in a browser
def test_the_page_in_chromium(served, sound, tmp_path):
    from playwright import sync_api

    if not Path(CHROMIUM).is_file():
        pytest.fail("chromium is not installed: the studio's browser test needs it (make browser)")
    studio, url = served
    before = set(studio.out.glob("*.json"))
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 3800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.locator("#sound input[type=file]").set_input_files(str(sound))
        mask = page.locator("#mask img")
        mask.wait_for(timeout=60_000)
        first = mask.get_attribute("src")
        page.locator("#downshift input[type=range]").fill("120")  # the slider moves: input and change events
        page.wait_for_function(
            "first => { const im = document.querySelector('#mask img'); return im && im.src !== first; }",
            arg=first, timeout=60_000,
        )  # fmt: skip
        page.locator("#generate").click()
        page.locator("#output-audio audio, #output-audio [data-testid=waveform-output]").first.wait_for(
            state="attached", timeout=240_000
        )
        page.locator("#take-image img").first.wait_for(timeout=60_000)  # the new take, listed and shown
        page.wait_for_function("() => [...document.images].every(im => im.complete)", timeout=60_000)
        shot = tmp_path / "app.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert not errors, errors
    (take,) = set(studio.out.glob("*.json")) - before
    assert leaves(json.loads(take.read_text())["config"])["downshift"] == 120  # the slider's value made the take
    assert Image.open(shot).size[0] >= 1000
    if os.environ.get("RIFFMASK_APP_SCREENSHOT"):  # how docs/app.png is made
        shutil.copyfile(shot, os.environ["RIFFMASK_APP_SCREENSHOT"])
