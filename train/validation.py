"""Validation during training: music from fixed everyday sounds, a held-out loss and genre accuracy.

The masked pipeline is assembled from the models being trained (no reload from disk), generates from
the same sounds, mask and seed each time, and its spectrograms and decoded audio are written under
``validation/step-<N>/`` and sent to the tracker (wandb, offline mode included, or tensorboard).
It runs inside ``fork_rng`` so that validating never moves the training's random state.

When the held-out clips span two genres or more, each validation also classifies them by diffusion
classification (``riffmask.metrics.genre``, the measure of ``riffmask eval genre``) with the models
in memory: genre accuracy and per-genre loss go to the log and the tracker, the confusion matrix to
the tracker and ``validation/step-<N>/confusion.png``, and ``validation/genre.json`` keeps the
base model's result beside every step's, for the model card.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from riffmask.common.io import write_json_atomic
from riffmask.core.audio import load_audio, write_wav
from riffmask.core.codec import save_image
from riffmask.train import data
from riffmask.train.loss import per_sample_loss, training_target


class Validator:
    """Fixed validation sounds and generation settings, and the held-out clips."""

    def __init__(self, cfg, models, held_out: data.ClipCache | None, folder: Path, default_prompt: str,
                 train_rows: Sequence[dict] = (), held_out_rows: Sequence[dict] = ()):
        from riffmask.core.params import SpectrogramOptions
        from riffmask.data_prep.synth import write_builtin_sound
        from riffmask.infer.config import GenerateConfig

        self.cfg, self.models, self.held_out, self.folder = cfg, models, held_out, folder
        self.genre_prompts = self._genre_prompts(cfg, [*train_rows, *held_out_rows]) if held_out is not None else None
        self.held_out_genres = [row["genre"] for row in held_out_rows]
        # Generate's own sections, at the training resolution; one window (the training size) per sound.
        sampling = dataclasses.replace(
            cfg.validation.sampling, prompt=cfg.validation.sampling.prompt or [default_prompt],
            window=cfg.resolution, overlap=cfg.resolution // 4,
        )  # fmt: skip
        self.generate_cfg = GenerateConfig(
            sampling=sampling, mask=cfg.validation.mask, decode=cfg.validation.decode,
            spectrogram=SpectrogramOptions(num_frequencies=cfg.resolution),
        )  # fmt: skip
        params = self.generate_cfg.spectrogram.params
        seconds = params.samples_for(cfg.resolution) / params.sample_rate  # one window: the training size
        sounds = [Path(p) for p in cfg.validation_sounds] or [write_builtin_sound(folder / "inputs" / "kettle.wav")]
        self.sounds = [(path.stem, load_audio(path, duration=seconds)) for path in sounds]

    @staticmethod
    def _genre_prompts(cfg, rows: list[dict]) -> dict[str, str] | None:
        """The candidate prompt of each genre, as the captions were trained; None when genres cannot be
        told apart by prompt (one genre, or one caption for all: ``captions=instance_prompt``)."""
        from riffmask.metrics.genre import genre_prompts, genres_of

        template = cfg.instance_template if cfg.captions == "template" else None
        prompts = genre_prompts(rows, genres_of(rows), template)
        distinct = len(set(prompts.values())) == len(prompts) > 1
        return prompts if distinct and cfg.captions != "instance_prompt" else None

    def run(self, step: int, accelerator, unet, text_encoder, vae, media: bool = True) -> dict[str, float]:
        """Compute the held-out loss and genre accuracy, generate and log the media; return scalar logs."""
        logs: dict[str, float] = {}
        was_training = {m: m.training for m in (unet, text_encoder)}
        unet.eval()
        text_encoder.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                if self.held_out is not None:
                    with accelerator.autocast():
                        logs["val_loss"] = self.held_out_loss(unet, text_encoder, vae)
                if self.genre_prompts is not None:
                    logs.update(self.genre(step, accelerator, unet, text_encoder, vae))
                if media:
                    self.generate(step, accelerator, unet, text_encoder, vae)
        finally:
            for model, training in was_training.items():
                model.train(training)
        return logs

    def held_out_loss(self, unet, text_encoder, vae) -> float:
        """Mean loss over every held-out clip, with fixed noise and timesteps (comparable across steps)."""
        m, cache = self.models, self.held_out
        batch = data.make_batch(cache, range(len(cache)), self.cfg.seed, data.HELD_OUT, vae.config.scaling_factor,
                                m.noise_scheduler.config.num_train_timesteps)
        device = unet.device
        latents, noise, timesteps = batch.latents.to(device), batch.noise.to(device), batch.timesteps.to(device)
        ids = cache.input_ids[batch.caption_index].to(device)
        states = text_encoder(ids)[0] if cache.embeddings is None else cache.embeddings[batch.caption_index].to(device)
        pred = unet(m.noise_scheduler.add_noise(latents, noise, timesteps), timesteps, states).sample
        target = training_target(m.noise_scheduler, latents, noise, timesteps, m.prediction_type)
        return per_sample_loss(pred, target, timesteps, m.noise_scheduler, m.prediction_type, None).mean().item()

    def genre(self, step: int, accelerator, unet, text_encoder, vae) -> dict[str, float]:
        """Genre accuracy and per-genre loss of the held-out clips; step 0 is the base model."""
        from riffmask.metrics.genre import GenreModel, classify, confusion_figure, save_confusion_png

        m, cache = self.models, self.held_out
        channels = cache.posterior.shape[1] // 2
        latents = cache.posterior[:, :channels] * vae.config.scaling_factor
        model = GenreModel(unet, text_encoder, m.tokenizer, vae, m.noise_scheduler, m.prediction_type)
        with accelerator.autocast():
            result = classify(model, latents, self.held_out_genres, self.genre_prompts, self.cfg.validation_genre_pairs)
        save_confusion_png(result, self.folder / f"step-{step}" / "confusion.png", f"step {step}")
        record_path = self.folder / "genre.json"
        record = read_json(record_path) if step and record_path.is_file() else {"steps": {}}
        record["steps"][str(step)] = result.summary()
        write_json_atomic(record_path, record)
        for tracker in accelerator.trackers:
            figure = confusion_figure(result, f"step {step}")
            if tracker.name == "tensorboard":
                tracker.writer.add_figure("validation/genre_confusion", figure, step)
            elif tracker.name == "wandb":
                import wandb

                tracker.log({"validation/genre_confusion": wandb.Image(figure)}, step=step)
        return {"genre_accuracy": result.accuracy,
                **{f"genre_loss/{row['genre']}": row["loss"] for row in result.per_genre() if row["clips"]}}

    @staticmethod
    def describe(logs: dict[str, float]) -> str:
        """One line of validation results for the console."""
        parts = [f"held-out loss {logs['val_loss']:.4f}"] if "val_loss" in logs else []
        if "genre_accuracy" in logs:
            losses = ", ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in logs.items() if k.startswith("genre_loss/"))
            parts.append(f"genre accuracy {logs['genre_accuracy']:.3f} (loss per genre: {losses})")
        return "; ".join(parts) or "media written"

    def generate(self, step: int, accelerator, unet, text_encoder, vae) -> None:
        """The masked pipeline over the models in memory, through infer's own generate function."""
        from riffmask.infer.generate import generate_sound

        pipe = _autocast_pipeline(vae=vae, text_encoder=text_encoder, tokenizer=self.models.tokenizer, unet=unet,
                                  scheduler=self.models.inference_scheduler)
        pipe.autocast = accelerator.autocast
        pipe.set_progress_bar_config(disable=True)
        out_dir = self.folder / f"step-{step}"
        media = []
        for name, audio in self.sounds:
            result = generate_sound(pipe, audio, self.generate_cfg)[0]
            save_image(result.output_image, out_dir / f"{name}.png")
            write_wav(out_dir / f"{name}.wav", result.audio, self.generate_cfg.spectrogram.params.sample_rate)
            media.append((name, result.output_image, result.audio))
        log_media(accelerator, step, media, self.generate_cfg.sampling.prompt[0],
                  self.generate_cfg.spectrogram.params.sample_rate)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _autocast_pipeline(**components):
    """The masked pipeline whose model calls run under the run's autocast (frozen weights may be half
    precision, trained ones fp32); generate_sound's audio decoding stays outside it, in float32."""
    from riffmask.infer.pipeline import MaskedRiffusionPipeline

    class AutocastPipeline(MaskedRiffusionPipeline):
        def __call__(self, *args, **kwargs):
            with self.autocast():
                return super().__call__(*args, **kwargs)

    return AutocastPipeline(**components)


def log_media(accelerator, step: int, media: list, prompt: str, sample_rate: int) -> None:
    """Spectrograms and playable audio to every active tracker."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            for name, image, audio in media:
                tracker.writer.add_image(f"validation/{name}", np.asarray(image), step, dataformats="HWC")
                tracker.writer.add_audio(f"validation/{name}", torch.from_numpy(audio)[None], step, sample_rate)
        elif tracker.name == "wandb":
            import wandb

            tracker.log({
                "validation/spectrogram": [wandb.Image(image, caption=f"{name}: {prompt}") for name, image, _ in media],
                "validation/audio": [wandb.Audio(audio, sample_rate=sample_rate, caption=name)
                                     for name, _, audio in media],
            }, step=step)
