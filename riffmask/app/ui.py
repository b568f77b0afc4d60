"""The studio's page (Gradio 6) and its named API: ``/spectrogram``, ``/mask``, ``/generate``.

Parameters of the API endpoints are named like ``riffmask generate``'s options, so a script reads
like the command line::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    wav, *_ = client.predict(audio=handle_file("kettle.wav"), prompt="jazz", steps=30, api_name="/generate")

Every generation runs through one queue (one at a time per loaded model, the others wait with their
position shown); mask and spectrogram previews have their own, so they stay live meanwhile.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from riffmask.app.models import leaves
from riffmask.app.studio import REQUEST_KEYS, Cancelled, Studio, write_example
from riffmask.common.errors import RiffmaskError
from riffmask.core.decode import DEFAULT_ITERATIONS
from riffmask.data_prep.synth import GENRES, genre_clip, kettle
from riffmask.infer.mask import MaskParams
from riffmask.metrics.sweep import ABLATION

#: Built-in example sounds (synthesised on first use, see data_prep.synth).
EXAMPLES = {"kettle": lambda: kettle(6.0), **{g: (lambda g=g: genre_clip(g, 0, 6.0)) for g in GENRES}}
#: Mask presets: the paper's control and its two ablations (metrics.sweep.ABLATION); a skipped step is -1.
PRESETS = {"paper (all steps)" if name == "all steps" else name: change for name, change in ABLATION.items()}
SKIP = -1
MASK_KEYS = ("invert", "brightness", "contrast", "downshift")
#: Where the example sounds are written (served like the output folder).
EXAMPLES_DIR = Path(tempfile.gettempdir()) / "riffmask-examples"
SCHEDULERS = [
    "", "DDIMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
]  # fmt: skip
TAKE_COLUMNS = ["take", "prompt", "seed", "strength", "guidance", "steps", "downshift", "model", "SSIM", "chroma"]
#: Every generation shares this queue, so one pipeline call runs at a time per loaded model.
MODEL_QUEUE = "model"
CSS = "#mask-steps img { image-rendering: pixelated; }"


def _error(exc: RiffmaskError) -> gr.Error:
    return gr.Error(str(exc), title="Cancelled" if isinstance(exc, Cancelled) else "Error", print_exception=False)


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _scales(text: str | None) -> list[float]:
    try:
        return [float(v) for v in (text or "").replace(",", " ").split()]
    except ValueError:
        raise gr.Error(f"lora_scale: numbers separated by commas, got {text!r}", print_exception=False) from None


def _duration(value: float | None) -> float | None:
    """An empty or zero duration means: to the end of the sound."""
    return float(value) if value else None


def build_app(studio: Studio, status: str = "") -> gr.Blocks:
    """The studio's page for ``studio``; ``status`` is shown under the model controls at start."""
    d = studio.defaults
    knob = {k: SKIP if d[k] is None else d[k] for k in MASK_KEYS}  # a skipped step shows as -1
    cancel_requests: set[str] = set()

    def settings_of(values: dict[str, Any]) -> dict[str, Any]:
        return {
            **values,
            "prompt": _lines(values["prompt"]) or d["prompt"],
            "negative_prompt": values["negative_prompt"] or None,
            "duration": _duration(values["duration"]),
            "lora": _lines(values["lora"]),
            "lora_scale": _scales(values["lora_scale"]),
            "scheduler": values["scheduler"] or None,
            "iterations": None if values["iterations"] is None else int(values["iterations"]),
            "steps": int(values["steps"]),
            "seed": int(values["seed"]),
            "num_variations": int(values["num_variations"]),
        }

    # ------------------------------------------------------------------ handlers (named like the API)
    def spectrogram(audio: str | None, start: float = 0.0, duration: float | None = None):
        """The spectrogram image of the part of ``audio`` from ``start`` for ``duration`` seconds."""
        if not audio:
            return None
        try:
            return studio.spectrogram(audio, float(start or 0.0), _duration(duration))
        except RiffmaskError as exc:
            raise _error(exc) from None

    def part(audio: str | None, start: float = 0.0, duration: float | None = None):
        if not audio:
            return None
        try:
            return studio.part(audio, float(start or 0.0), _duration(duration))
        except RiffmaskError:
            return None  # the spectrogram event of the same change reports the problem

    def mask(image, invert: float, brightness: float, contrast: float, downshift: float):
        """The mask of a spectrogram image (``riffmask mask`` with these values; negative skips a step)."""
        if image is None:
            return None
        try:
            return studio.mask(image, invert, brightness, contrast, downshift)
        except RiffmaskError as exc:
            raise _error(exc) from None

    def mask_views(image, invert: float, brightness: float, contrast: float, downshift: float):
        if image is None:
            return None, None
        return studio.mask_views(image, invert, brightness, contrast, downshift)

    def generate(
        audio, prompt, negative_prompt, strength, guidance, steps, seed, num_variations,
        invert, brightness, contrast, downshift, start, duration, iterations, phase_start,
        model, lora, lora_scale, scheduler, request: gr.Request, progress=gr.Progress(),  # noqa: B008 (Gradio's way to ask for a tracker)
    ):  # fmt: skip
        """Music from ``audio``: the takes are written to the output folder like ``riffmask generate``'s;
        returns the first take's WAV, spectrograms and sidecar, all takes' files and their scores."""
        values = dict(zip(REQUEST_KEYS, (
            prompt, negative_prompt, strength, guidance, steps, seed, num_variations,
            invert, brightness, contrast, downshift, start, duration, iterations, phase_start,
            model, lora, lora_scale, scheduler,
        ), strict=True))  # fmt: skip
        session = request.session_hash
        cancel_requests.discard(session)

        def on_step(step: int, total: int) -> None:
            if session in cancel_requests:
                raise Cancelled(f"cancelled after {step - 1} of {total} steps")
            progress((step, total), desc="denoising", unit="steps")

        progress(0.0, desc="loading the model")
        try:
            takes = studio.generate(audio, settings_of(values), on_step)
        except RiffmaskError as exc:
            raise _error(exc) from None
        finally:
            cancel_requests.discard(session)
        first = takes[0]
        scores = [{"take": t.name, "ssim": round(t.ssim, 4), "chroma": round(t.chroma, 4)} for t in takes]
        files = [str(p) for t in takes for p in t.files.values()]
        return (
            str(first.files["output_audio"]),
            str(first.files["input_audio"]),
            str(first.files["output_image"]),
            str(first.files["input_image"]),
            str(first.files["mask_image"]),
            first.sidecar,
            scores,
            files,
        )

    def cancel(request: gr.Request) -> None:
        cancel_requests.add(request.session_hash)
        gr.Info("Cancelling after the current step")

    def load_model(model: str, lora: str, lora_scale: str, scheduler: str):
        settings = {"model": model.strip(), "lora": _lines(lora), "lora_scale": _scales(lora_scale)}
        settings["scheduler"] = scheduler or None
        try:
            studio.load(settings)
        except RiffmaskError as exc:
            raise _error(exc) from None
        return model.strip(), lora, lora_scale, scheduler, f"Loaded **{model.strip()}**"

    def example(name: str | None):
        if not name:
            return gr.skip()
        return str(write_example(EXAMPLES_DIR, name, EXAMPLES[name]))

    def preset(name: str):
        values = {**dataclasses.asdict(MaskParams()), **PRESETS[name]}  # the paper's values, one step off
        return [SKIP if values[k] is None else values[k] for k in MASK_KEYS]

    def takes_table():
        rows, names = [], []
        for name, sidecar in studio.takes():
            opts = leaves(sidecar.get("config") or {})
            ssim_chroma = studio.metrics.get(name, (None, None))
            rows.append([
                name, sidecar.get("prompt"), sidecar.get("seed"), opts.get("strength"), opts.get("guidance"),
                opts.get("steps"), opts.get("downshift"), sidecar.get("model"),
                *(None if v is None else round(v, 3) for v in ssim_chroma),
            ])  # fmt: skip
            names.append(name)
        return gr.update(value=rows), gr.update(choices=names, value=names[0] if names else None)

    def take_view(name: str | None):
        """A take's music, its output spectrogram and all its files (to download)."""
        if not name:
            return None, None, None
        try:
            paths = studio.take_files(name)
        except RiffmaskError as exc:
            raise _error(exc) from None
        by_name = {p.name: str(p) for p in paths}
        return by_name[f"{name}.wav"], by_name[f"{name}_output.png"], list(by_name.values())

    def use_settings(name: str | None):
        if not name:
            raise gr.Error("pick a take first", print_exception=False)
        try:
            settings, source = studio.take_settings(name)
        except RiffmaskError as exc:
            raise _error(exc) from None
        values = []
        for key in REQUEST_KEYS:
            value = settings.get(key, d.get(key))
            if key in ("prompt", "lora"):
                value = "\n".join(value or [])
            elif key == "lora_scale":
                value = ", ".join(f"{v:g}" for v in value or [])
            elif key in MASK_KEYS and value is None:
                value = SKIP
            elif key in ("negative_prompt", "scheduler") and value is None:
                value = ""
            values.append(value)
        return [str(source) if source else gr.skip(), *values]

    # ------------------------------------------------------------------ layout
    with gr.Blocks(title="riffmask studio", analytics_enabled=False) as app:
        gr.Markdown(
            "# riffmask studio\nTurn an everyday sound into music: pick a sound and its part, shape the mask, "
            f"generate, keep the takes. Takes are written to `{studio.out}`."
        )
        with gr.Row():
            with gr.Column():
                sound = gr.Audio(label="Sound", sources=["upload", "microphone"], type="filepath", elem_id="sound")
                example_pick = gr.Dropdown(list(EXAMPLES), value=None, label="…or a built-in example sound")
                with gr.Row():
                    start = gr.Number(d["start"], label="Start (s)", minimum=0)
                    duration = gr.Number(
                        d["duration"] or 0, label=f"Duration (s; 0: to the end, at most {d['max_seconds']})", minimum=0
                    )
                part_player = gr.Audio(label="The part that will be processed", interactive=False)
            with gr.Column():
                spec = gr.Image(label="Spectrogram", type="pil", format="png", image_mode=None, interactive=False,
                                elem_id="spectrogram")  # fmt: skip
        with gr.Accordion("Mask", open=True):
            with gr.Row():
                preset_pick = gr.Dropdown(list(PRESETS), value=list(PRESETS)[0], label="Preset")
                invert = gr.Slider(SKIP, 1, knob["invert"], step=0.01, label="Invert (negative: skip)")
                brightness = gr.Slider(SKIP, 2, knob["brightness"], step=0.01, label="Brightness (negative: skip)")
                contrast = gr.Slider(SKIP, 400, knob["contrast"], step=1, label="Contrast (negative: skip)")
                downshift = gr.Slider(SKIP, 255, knob["downshift"], step=1, label="Downshift", elem_id="downshift")
            with gr.Row():
                mask_img = gr.Image(label="Mask", type="pil", format="png", interactive=False, elem_id="mask")
                overlay_img = gr.Image(label="Mask over the spectrogram", format="png", interactive=False)
            steps_img = gr.Image(label="Step by step", format="png", interactive=False, elem_id="mask-steps")
        with gr.Accordion("Model", open=False):
            with gr.Row():
                model_box = gr.Textbox(d["model"], label="Model: Hub id, diffusers folder or .safetensors file")
                scheduler_pick = gr.Dropdown(SCHEDULERS, value=d["scheduler"] or "", label="Scheduler (empty: own)")
            with gr.Row():
                lora_box = gr.Textbox("\n".join(d["lora"]), lines=2, label="LoRAs (one per line)")
                scale_box = gr.Textbox(", ".join(f"{v:g}" for v in d["lora_scale"]), label="LoRA scales")
            load_button = gr.Button("Load")
            model_status = gr.Markdown(status or f"Model: **{d['model']}** (loaded on first use)")
            # The model in use: changed only by a load that worked, so a failed one leaves the last.
            active = [
                gr.Textbox(d["model"], visible=False),
                gr.Textbox("\n".join(d["lora"]), visible=False),
                gr.Textbox(", ".join(f"{v:g}" for v in d["lora_scale"]), visible=False),
                gr.Textbox(d["scheduler"] or "", visible=False),
            ]
        with gr.Accordion("Generate", open=True):
            with gr.Row():
                prompt = gr.Textbox("\n".join(d["prompt"]), lines=2, label="Prompt(s), one per line")
                negative = gr.Textbox(d["negative_prompt"] or "", label="Negative prompt")
            with gr.Row():
                strength = gr.Slider(0.01, 1, d["strength"], step=0.01, label="Strength")
                guidance = gr.Slider(0, 20, d["guidance"], step=0.5, label="Guidance")
                steps = gr.Slider(1, 150, d["steps"], step=1, label="Steps")
                variations = gr.Slider(1, 8, d["num_variations"], step=1, label="Variations")
            with gr.Row():
                seed = gr.Number(d["seed"], label="Seed", precision=0)
                dice = gr.Button("Random seed", scale=0, min_width=120)
                # An empty count means the start's own default; shown as that number, so it can be read.
                iterations = gr.Number(
                    DEFAULT_ITERATIONS[d["phase_start"]] if d["iterations"] is None else d["iterations"],
                    label="Decoder iterations", precision=0,
                )  # fmt: skip
                phase = gr.Radio(["input", "pghi", "random"], value=d["phase_start"], label="Decoder start phase")
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Cancel", variant="stop")
            with gr.Row():
                in_player = gr.Audio(label="Input (A)", interactive=False)
                out_player = gr.Audio(label="Output (B)", interactive=False, elem_id="output-audio")
            with gr.Row():
                in_image = gr.Image(label="Input spectrogram", format="png", interactive=False)
                out_image = gr.Image(label="Output spectrogram", format="png", interactive=False)
                used_mask = gr.Image(label="Mask used", format="png", interactive=False)
            scores = gr.JSON(label="Similarity to the input per take (SSIM, chroma)")
            sidecar = gr.JSON(label="Sidecar of the first take", open=False, height=240)
            files = gr.File(label="Files of this run", file_count="multiple")
        with gr.Accordion("Takes", open=True):
            table = gr.Dataframe(headers=TAKE_COLUMNS, interactive=False, label="Takes in the output folder")
            with gr.Row():
                take_pick = gr.Dropdown([], label="Take")
                use = gr.Button("Use these settings")
            with gr.Row():
                take_player = gr.Audio(label="Take", interactive=False)
                take_image = gr.Image(label="Its spectrogram", format="png", interactive=False, elem_id="take-image")
            take_download = gr.File(label="Its files", file_count="multiple")

        # ------------------------------------------------------------------ events
        sound_triggers = [sound.change, start.submit, duration.submit, start.blur, duration.blur]
        gr.on(sound_triggers, spectrogram, [sound, start, duration], spec, api_name="spectrogram",
              trigger_mode="always_last", concurrency_limit=4).then(
            part, [sound, start, duration], part_player, api_visibility="private")  # fmt: skip
        knobs = [invert, brightness, contrast, downshift]
        gr.on([spec.change] + [k.change for k in knobs], mask, [spec, *knobs], mask_img, api_name="mask",
              trigger_mode="always_last", show_progress="hidden", concurrency_limit=4).then(
            mask_views, [spec, *knobs], [overlay_img, steps_img], api_visibility="private",
            show_progress="hidden")  # fmt: skip
        preset_pick.input(preset, preset_pick, knobs, api_visibility="private")
        example_pick.input(example, example_pick, sound, api_visibility="private")
        phase.input(lambda start: DEFAULT_ITERATIONS[start], phase, iterations, api_visibility="private")
        dice.click(lambda: random.randrange(2**31), None, seed, api_visibility="private")
        controls = [prompt, negative, strength, guidance, steps, seed, variations, *knobs, start, duration,
                    iterations, phase]  # fmt: skip
        run = go.click(
            generate, [sound, *controls, *active],
            [out_player, in_player, out_image, in_image, used_mask, sidecar, scores, files],
            api_name="generate", concurrency_id=MODEL_QUEUE, concurrency_limit=1,
        )  # fmt: skip
        run.then(takes_table, None, [table, take_pick], api_visibility="private")
        stop.click(cancel, None, None, queue=False, api_visibility="private")
        load_button.click(
            load_model, [model_box, lora_box, scale_box, scheduler_pick], [*active, model_status],
            api_visibility="private", concurrency_id=MODEL_QUEUE, concurrency_limit=1,
        )  # fmt: skip
        take_pick.change(take_view, take_pick, [take_player, take_image, take_download], api_visibility="private")
        editable = [prompt, negative, strength, guidance, steps, seed, variations, *knobs, start, duration, iterations,
                    phase, model_box, lora_box, scale_box, scheduler_pick]  # fmt: skip
        use.click(use_settings, take_pick, [sound, *editable], api_visibility="private")
        app.load(takes_table, None, [table, take_pick], api_visibility="private")
    return app


def read_auth(value: str | None) -> list[tuple[str, str]] | None:
    """``user:pass``, or a file of such lines, as Gradio's list of (user, password) pairs."""
    if not value:
        return None
    path = Path(value)
    lines = _lines(path.read_text(encoding="utf-8")) if path.is_file() else [value]
    pairs = [tuple(line.split(":", 1)) for line in lines if not line.startswith("#")]
    if not pairs or any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise RiffmaskError(f"--auth: give user:password or a file of user:password lines, got {value!r}")
    return pairs  # type: ignore[return-value]


def launch(
    app: gr.Blocks,
    studio: Studio,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    auth: list[tuple[str, str]] | None = None,
    max_upload_mb: float = 100.0,
    block: bool = True,
) -> gr.Blocks:
    """Serve the page: bound to ``host`` (loopback unless told), files limited to the output folder,
    the example sounds and the uploads, uploads over ``max_upload_mb`` refused."""
    studio.out.mkdir(parents=True, exist_ok=True)
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        allowed_paths=[str(studio.out), str(EXAMPLES_DIR)],
        max_file_size=f"{max_upload_mb:g}mb",
        prevent_thread_lock=not block,
        ssr_mode=False,
        show_error=True,
        quiet=not block,
        css=CSS,
        # System fonts: the page loads nothing from the internet (the studio also runs offline).
        theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace"]),
    )
    return app
