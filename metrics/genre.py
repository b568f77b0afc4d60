"""Genre accuracy of a text-to-spectrogram model by diffusion classification.

Li et al., "Your Diffusion Model is Secretly a Zero-Shot Classifier" (2023): a conditional diffusion
model scores how well a prompt explains an image by how well it denoises the image under that
prompt. For every clip and every candidate genre prompt we take the mean denoising error over the
same seeded set of (timestep, noise) pairs; the prompt with the lowest error is the prediction.
Sharing the pairs between prompts is what makes the comparison fair: the noise draw dominates
the error, and it cancels out between prompts.

Everything works on latents: each clip is VAE-encoded once (the posterior mean), so the cost is
``clips x prompts x pairs`` UNet evaluations and nothing else. Timesteps are stratified (one per
equal slice of the schedule) rather than drawn at random, which lowers the variance of the mean
for the same cost.

Used by ``riffmask eval genre``, by training validation (genre accuracy at every validation step),
by ``riffmask sweep`` (the genre rate of generated outputs) and by ``make demo``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from riffmask.common.errors import RiffmaskError
from riffmask.data_prep.sources import readable_name

if TYPE_CHECKING:
    from riffmask.infer.config import CheckpointConfig

#: (timestep, noise) pairs per clip and prompt. Cost grows linearly with it; measured on the tiny
#: fine-tune (docs/genre.md), agreement with a 64-pair classification rises to 0.87 at 16 pairs and
#: no further at 32.
DEFAULT_PAIRS = 16
DEFAULT_SEED = 0


@dataclass
class GenreModel:
    """The parts of a Stable Diffusion pipeline the classifier runs: UNet, text side, VAE, DDPM maths."""

    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    vae: torch.nn.Module
    noise_scheduler: object  # a DDPMScheduler: add_noise, get_velocity, num_train_timesteps
    prediction_type: str = "epsilon"

    @classmethod
    def from_pipeline(cls, pipe) -> GenreModel:
        """The classifier's view of a loaded diffusers pipeline (its scheduler config gives the maths)."""
        from diffusers import DDPMScheduler

        if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "tokenizer", None) is None:
            raise RiffmaskError("the model has no text encoder or tokenizer: genre prompts cannot be scored")
        config = pipe.scheduler.config
        return cls(pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.vae, DDPMScheduler.from_config(config),
                   config.get("prediction_type", "epsilon"))


# --------------------------------------------------------------------------- prompts
def genres_of(rows: Sequence[Mapping]) -> list[str]:
    """The distinct genres of prepared clips, sorted."""
    return sorted({row["genre"] for row in rows})


def genre_prompts(rows: Sequence[Mapping], genres: Sequence[str], template: str | None = None) -> dict[str, str]:
    """The candidate prompt of each genre, written the way the training captions were.

    ``template`` (a fine-tune's ``instance_template`` when it trained with ``captions=template``)
    wins; otherwise the caption the genre's clips share (prep's ``caption_template``, ``{genre}`` by
    default); when they do not share one (``{stem}`` or ``.txt`` captions), the genre as words.
    """
    if template is not None:
        return {g: template.format(genre=g) for g in genres}
    captions: dict[str, Counter] = {g: Counter() for g in genres}
    for row in rows:
        if row["genre"] in captions:
            captions[row["genre"]][row["caption"]] += 1
    return {g: next(iter(c)) if len(c) == 1 else readable_name(g) for g, c in captions.items()}


def parse_prompt_list(text: str) -> list[str]:
    """``"jazz, lofi hip hop"`` -> ``["jazz", "lofi hip hop"]``; empty entries are an error."""
    prompts = [p.strip() for p in text.split(",")]
    if not all(prompts) or len(set(prompts)) != len(prompts):
        raise RiffmaskError(f"--prompts {text!r}: give distinct, non-empty prompts separated by commas")
    return prompts


# --------------------------------------------------------------------------- the classifier
def image_pixels(image) -> torch.Tensor:
    """A spectrogram PIL image as the VAE reads it: (3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


@torch.no_grad()
def encode_latents(vae, images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Scaled posterior means of (3, H, W) images in [-1, 1]: the clean latents, one per clip."""
    device, dtype = vae.device, vae.dtype
    out = [vae.encode(image[None].to(device, dtype)).latent_dist.mean.float().cpu() for image in images]
    return torch.cat(out) * vae.config.scaling_factor


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder hidden states of each prompt, (P, L, D), padded as in training."""
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0].float()


def noise_pairs(num_pairs: int, shape: Sequence[int], num_train_timesteps: int, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The (timestep, noise) pairs shared by every clip and prompt: stratified timesteps, seeded noise."""
    if num_pairs < 1:
        raise RiffmaskError(f"pairs: at least 1 (timestep, noise) pair is needed, got {num_pairs}")
    generator = torch.Generator().manual_seed(seed)
    timesteps = ((torch.arange(num_pairs) + 0.5) * num_train_timesteps / num_pairs).long()
    noise = torch.randn((num_pairs, *shape), generator=generator)
    return timesteps, noise


@torch.no_grad()
def denoising_errors(model: GenreModel, latents: torch.Tensor, embeddings: torch.Tensor, num_pairs: int,
                     seed: int = DEFAULT_SEED, batch_size: int = 64, progress=None) -> torch.Tensor:
    """(clips, prompts) mean squared denoising error of each clip under each prompt embedding.

    ``progress``, if given, is called once per clip.
    """
    unet, scheduler = model.unet, model.noise_scheduler
    device, dtype = unet.device, unet.dtype
    timesteps, noise = noise_pairs(num_pairs, latents.shape[1:], scheduler.config.num_train_timesteps, seed)
    num_prompts = len(embeddings)
    # Every (pair, prompt) combination of one clip: pair-major, so a chunk shares few noisy latents.
    pair_of = torch.arange(num_pairs).repeat_interleave(num_prompts)
    prompt_of = torch.arange(num_prompts).repeat(num_pairs)
    embeddings = embeddings.to(device, dtype)
    errors = torch.zeros(len(latents), num_prompts)
    for i, clean in enumerate(latents):
        clean = clean[None].expand(num_pairs, *clean.shape)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        if model.prediction_type == "v_prediction":
            target = scheduler.get_velocity(clean, noise, timesteps)
        else:
            target = noise
        sums = torch.zeros(num_prompts)
        for start in range(0, len(pair_of), batch_size):
            pairs, prompts = pair_of[start : start + batch_size], prompt_of[start : start + batch_size]
            pred = unet(noisy[pairs].to(device, dtype), timesteps[pairs].to(device), embeddings[prompts]).sample
            mse = (pred.float().cpu() - target[pairs]).pow(2).mean(dim=(1, 2, 3))
            sums.index_add_(0, prompts, mse)
        errors[i] = sums / num_pairs
        if progress is not None:
            progress(i)
    return errors


# --------------------------------------------------------------------------- the summary
@dataclass
class GenreResult:
    """Predictions and scores of one evaluation; ``genres`` orders every per-genre list."""

    genres: list[str]
    prompts: list[str]
    true: list[int]  # genre index of each clip
    errors: np.ndarray  # (clips, genres) mean denoising error

    @property
    def predicted(self) -> list[int]:
        return [int(i) for i in self.errors.argmin(axis=1)]

    @property
    def accuracy(self) -> float:
        return float(np.mean([p == t for p, t in zip(self.predicted, self.true, strict=True)]))

    @property
    def confusion(self) -> np.ndarray:
        """(true genre, predicted genre) counts."""
        matrix = np.zeros((len(self.genres), len(self.genres)), dtype=np.int64)
        for t, p in zip(self.true, self.predicted, strict=True):
            matrix[t, p] += 1
        return matrix

    def per_genre(self) -> list[dict]:
        """Per genre: clips, recall, and the held-out loss (denoising error under the genre's own prompt)."""
        confusion, rows = self.confusion, []
        for g, genre in enumerate(self.genres):
            own = [self.errors[i, g] for i, t in enumerate(self.true) if t == g]
            clips = int(confusion[g].sum())
            rows.append({"genre": genre, "prompt": self.prompts[g], "clips": clips,
                         "recall": float(confusion[g, g] / clips) if clips else float("nan"),
                         "loss": float(np.mean(own)) if own else float("nan")})
        return rows

    def summary(self) -> dict:
        """Accuracy, chance level, per-genre recall and loss, the confusion matrix: plain JSON values."""
        per_genre = self.per_genre()
        return {
            "accuracy": self.accuracy, "clips": len(self.true), "chance": 1.0 / len(self.genres),
            "recall": {r["genre"]: r["recall"] for r in per_genre},
            "loss": {r["genre"]: r["loss"] for r in per_genre},
            "genres": list(self.genres), "prompts": list(self.prompts),
            "confusion": self.confusion.tolist(),
        }

    def clip_rows(self, names: Sequence[str]) -> list[dict]:
        """One row per clip: its genre, the prediction and the error under each genre's prompt."""
        return [{"name": name, "genre": self.genres[t], "predicted": self.genres[p], "correct": int(p == t),
                 **{f"error_{g}": float(e) for g, e in zip(self.genres, errors, strict=True)}}
                for name, t, p, errors in zip(names, self.true, self.predicted, self.errors, strict=True)]


def classify(model: GenreModel, latents: torch.Tensor, labels: Sequence[str], prompts: Mapping[str, str],
             num_pairs: int = DEFAULT_PAIRS, seed: int = DEFAULT_SEED, progress=None) -> GenreResult:
    """Diffusion classification of clean ``latents`` whose genres are ``labels`` among ``prompts``' genres."""
    genres = list(prompts)
    unknown = sorted(set(labels) - set(genres))
    if unknown:
        raise RiffmaskError(f"clips of genre(s) {', '.join(unknown)} have no candidate prompt")
    embeddings = encode_prompts(model.text_encoder, model.tokenizer, [prompts[g] for g in genres])
    errors = denoising_errors(model, latents, embeddings, num_pairs, seed, progress=progress)
    return GenreResult(genres, [prompts[g] for g in genres], [genres.index(g) for g in labels], errors.numpy())


def confusion_table(result: GenreResult) -> list[dict]:
    """The confusion matrix as rows (true genre) of counts per predicted genre, for printing and CSV."""
    return [{"true \\ predicted": genre, **dict(zip(result.genres, map(int, counts), strict=True))}
            for genre, counts in zip(result.genres, result.confusion, strict=True)]


def confusion_figure(result: GenreResult, title: str = "genre confusion"):
    """A matplotlib figure of the row-normalised confusion matrix with the counts written in."""
    from riffmask.metrics.plots import _pyplot

    plt = _pyplot()
    counts = result.confusion
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.7 * len(result.genres)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    ticks = range(len(result.genres))
    ax.set_xticks(ticks, result.genres, rotation=45, ha="right")
    ax.set_yticks(ticks, result.genres)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (accuracy {result.accuracy:.2f})")
    for (t, p), n in np.ndenumerate(counts):
        ax.text(p, t, str(n), ha="center", va="center", color="white" if share[t, p] > 0.5 else "black")
    return fig


def report_section(result: GenreResult, figure) -> str:
    """The HTML section of a report: accuracy, per-genre recall and loss, the confusion matrix."""
    from riffmask.metrics.plots import _pyplot
    from riffmask.metrics.report import figure_uri, rows_table

    uri = figure_uri(figure)
    _pyplot().close(figure)
    return (f'<section class="card"><h2>Genre accuracy {result.accuracy:.3f} '
            f"(chance {1 / len(result.genres):.3f}, {len(result.true)} clips)</h2>"
            + rows_table("per genre", result.per_genre()) + rows_table("confusion", confusion_table(result))
            + f'<figure><img alt="genre confusion matrix" src="{uri}"></figure></section>')


def prompts_from_list(entries: Sequence[str], genres: Sequence[str]) -> dict[str, str]:
    """``GENRE=PROMPT`` entries, or one plain prompt per genre in sorted genre order."""
    if all("=" in e for e in entries):
        prompts = dict(e.split("=", 1) for e in entries)
        prompts = {g.strip(): p.strip() for g, p in prompts.items()}
        missing = [g for g in genres if g not in prompts]
        if missing:
            raise RiffmaskError(f"--prompts: no prompt for genre(s) {', '.join(missing)}")
        return {g: prompts[g] for g in genres}
    if any("=" in e for e in entries) or len(entries) != len(genres):
        raise RiffmaskError(f"--prompts: give one prompt per genre ({', '.join(genres)}, in this order) "
                            f"or GENRE=PROMPT entries; got {len(entries)}")
    return dict(zip(genres, entries, strict=True))


def save_confusion_png(result: GenreResult, path: str | os.PathLike, title: str = "genre confusion") -> None:
    """The confusion figure as a PNG (atomically)."""
    from riffmask.metrics.plots import _pyplot, _save

    fig = confusion_figure(result, title)
    _save(fig, path)
    _pyplot().close(fig)


class GenreRater:
    """Which of a few prompts a latent reads as, to the pipeline that made it (the genre rate of
    ``riffmask sweep``: how often generating with prompt G gives an output latent classified as G).

    Outputs are classified as the latents the pipeline denoised, never as their decoded images: the
    VAE's encoder does not give a decoded latent back (the tiny model's random VAE returns another
    latent altogether, docs/genre.md), so an image would be read as whatever its re-encoding resembles.
    """

    def __init__(self, pipe, prompts: Sequence[str], num_pairs: int = DEFAULT_PAIRS, seed: int = DEFAULT_SEED):
        self.model = GenreModel.from_pipeline(pipe)
        self.prompts, self.num_pairs, self.seed = list(prompts), num_pairs, seed
        self.embeddings = encode_prompts(self.model.text_encoder, self.model.tokenizer, self.prompts)

    def classify(self, latent: torch.Tensor) -> str:
        """The prompt under which ``latent`` (one scaled latent, (C, h, w)) denoises best."""
        errors = denoising_errors(self.model, latent[None].float(), self.embeddings, self.num_pairs, self.seed)
        return self.prompts[int(errors[0].argmin())]

    def image_latent(self, image) -> torch.Tensor:
        """The latent of a spectrogram image (PIL, e.g. a sweep's input): its VAE posterior mean, scaled."""
        return encode_latents(self.model.vae, [image_pixels(image)])[0]


# --------------------------------------------------------------------------- a model folder on a dataset
def load_genre_model(checkpoint: CheckpointConfig) -> GenreModel:
    """Load a pipeline (and LoRAs) the way ``riffmask generate`` does, for classification."""
    from riffmask.infer.config import GenerateConfig
    from riffmask.infer.load import load_pipeline

    path = Path(checkpoint.model)
    if path.is_dir() and (path / "model_index.json").is_file() and not (path / "text_encoder").is_dir():
        raise RiffmaskError(
            f"{checkpoint.model}: the model folder has no text_encoder/: genre prompts cannot be scored"
        )
    return GenreModel.from_pipeline(load_pipeline(GenerateConfig(checkpoint=checkpoint)))


def trained_template(folders: Sequence[str | os.PathLike]) -> str | None:
    """The caption template a riffmask fine-tune trained with (``captions=template``), if any.

    The LoRA folders are read first, then the model's: the last fine-tune decides how prompts read.
    """
    import yaml

    for folder in folders:
        config = Path(folder) / "training_config.yaml"
        if config.is_file():
            values = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            if values.get("captions") == "template":
                return values.get("instance_template")
            return None
    return None


def split_rows(dataset: str | os.PathLike, split: str) -> list[dict]:
    """The clips of one split of a prepared dataset, checked to hold at least two genres."""
    from riffmask.data_prep.readers import SPLITS, load_prepared

    if split not in SPLITS:
        raise RiffmaskError(f"split: {split!r} is not one of {', '.join(SPLITS)}")
    rows = list(load_prepared(dataset)[split])
    if not rows:
        raise RiffmaskError(f"{dataset}: the {split} split has no clips")
    genres = genres_of(rows)
    if len(genres) < 2:
        raise RiffmaskError(f"{dataset}: the {split} split has {len(genres)} genre ({', '.join(genres)}); "
                            "genre accuracy needs clips of at least two genres")
    return rows


def clip_latents(vae, rows: Sequence[Mapping]) -> torch.Tensor:
    """The clean latent of every prepared clip (its spectrogram image, never resized)."""
    images = []
    for row in rows:
        width, height = row["image"].size
        if width % 8 or height % 8:
            raise RiffmaskError(f"clip {row.get('id', '?')}: {width}x{height} px is not a multiple of 8 "
                                "(the VAE downscale)")
        images.append(image_pixels(row["image"]))
    return encode_latents(vae, images)
