"""Training data: prepared clips, their captions, and everything computed once per clip.

Spectrograms are never flipped or randomly cropped (a flip reverses time, a shift changes pitch),
so the VAE posterior and the caption embedding of a clip are the same at every step. We encode each
clip once and keep the posterior's mean and standard deviation; every step draws a fresh latent from
them, exactly as ``vae.encode(x).latent_dist.sample()`` would, without running the VAE again.

All randomness of a sample (timestep, noise, posterior draw, offset noise) comes from a generator
seeded by (seed, stream, position in the sample stream), and the data order is a seeded permutation
per epoch. A batch is therefore a pure function of the step: resuming needs no data-loader state,
and one process with batch 2 sees exactly what two processes with batch 1 see together.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from riffmask.common.config import ConfigError
from riffmask.common.io import write_json_atomic
from riffmask.data_prep.readers import dataset_fingerprint
from riffmask.metrics.genre import image_pixels

#: Streams of the sample generator: instance clips, class (prior) clips, held-out validation clips.
INSTANCE, CLASS, HELD_OUT = 0, 1, 2


def captions_for(rows: Sequence[dict], mode: str, template: str, instance_prompt: str) -> list[str]:
    """One caption per clip: the dataset's, the instance template filled with the genre, or one prompt."""
    if mode == "dataset":
        return [row["caption"] for row in rows]
    if mode == "template":
        return [template.format(genre=row["genre"]) for row in rows]
    return [instance_prompt for _ in rows]


def image_tensor(image, resolution: int, name: str) -> torch.Tensor:
    """A spectrogram PIL image as a (3, H, W) tensor in [-1, 1]; never resized or cropped."""
    if image.size != (resolution, resolution):
        raise ConfigError(
            f"clip {name}: image is {image.size[0]}x{image.size[1]} px but resolution is {resolution}; "
            "spectrograms are not resized (that changes pitch and tempo): prepare the data at this size"
        )
    return image_pixels(image)


@dataclass
class ClipCache:
    """What the trainer needs of each clip, computed once.

    ``posterior``: (N, 2C, h, w) float32, the VAE posterior mean and std stacked on channels.
    ``caption_index``: (N,) index of the clip's caption in ``captions``.
    ``input_ids``: (U, L) token ids of each distinct caption.
    ``embeddings``: (U, L, D) text-encoder outputs of each caption, or None while the text encoder trains.
    ``groups``: clip indices of each genre when genres are sampled in turn (balanced), else None.
    """

    posterior: torch.Tensor
    caption_index: torch.Tensor
    captions: list[str]
    input_ids: torch.Tensor
    embeddings: torch.Tensor | None = None
    groups: list[list[int]] | None = None

    def __len__(self) -> int:
        return self.posterior.shape[0]


def genre_groups(rows: Sequence[dict]) -> list[list[int]]:
    """Indices of the clips of each genre, genres in sorted order."""
    genres = sorted({row["genre"] for row in rows})
    return [[i for i, row in enumerate(rows) if row["genre"] == genre] for genre in genres]


@torch.no_grad()
def encode_posteriors(vae, images: Sequence[torch.Tensor], batch_size: int = 1) -> torch.Tensor:
    """Mean and std of the VAE posterior of each image, (N, 2C, h, w) float32 on CPU.

    One image at a time by default: it runs once per clip, and a larger batch would raise the run's
    peak memory above that of the training step itself.
    """
    out = []
    device, dtype = vae.device, vae.dtype
    for start in range(0, len(images), batch_size):
        pixels = torch.stack(list(images[start : start + batch_size])).to(device, dtype)
        dist = vae.encode(pixels).latent_dist
        out.append(torch.cat([dist.mean, dist.std], dim=1).float().cpu())
    return torch.cat(out)


def tokenize(tokenizer, captions: Sequence[str]) -> torch.Tensor:
    return tokenizer(
        list(captions), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids


@torch.no_grad()
def encode_captions(text_encoder, input_ids: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Text-encoder hidden states of each tokenized caption, float32 on CPU."""
    device = text_encoder.device
    chunks = [text_encoder(input_ids[s : s + batch_size].to(device))[0].float().cpu()
              for s in range(0, len(input_ids), batch_size)]
    return torch.cat(chunks)


def build_cache(rows: Sequence[dict], captions: Sequence[str], vae, tokenizer, resolution: int) -> ClipCache:
    """Encode every clip once (posterior) and tokenize each distinct caption once."""
    images = [image_tensor(row["image"], resolution, row.get("id", str(i))) for i, row in enumerate(rows)]
    distinct = list(dict.fromkeys(captions))
    index = {caption: i for i, caption in enumerate(distinct)}
    return ClipCache(
        posterior=encode_posteriors(vae, images),
        caption_index=torch.tensor([index[c] for c in captions], dtype=torch.long),
        captions=distinct,
        input_ids=tokenize(tokenizer, distinct),
    )


# --------------------------------------------------------------------------- the sample stream
@functools.lru_cache(maxsize=8)
def _permutation(num_items: int, seed: int, stream: int, epoch: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(_mix(seed, stream, epoch, 0x5EED))
    return tuple(torch.randperm(num_items, generator=generator).tolist())


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix-style, so nearby inputs give unrelated seeds)."""
    state = 0
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & 0x7FFFFFFFFFFFFFFF


def batch_positions(micro_step: int, batch_size: int, rank: int, num_processes: int) -> range:
    """Positions in the sample stream that process ``rank`` trains on at ``micro_step``."""
    start = (micro_step * num_processes + rank) * batch_size
    return range(start, start + batch_size)


def clip_index(position: int, num_items: int, seed: int, stream: int) -> int:
    """The clip at ``position`` of the stream: epochs are seeded permutations of all clips."""
    epoch, offset = divmod(position, num_items)
    return _permutation(num_items, seed, stream, epoch)[offset]


def clip_at(cache: ClipCache, position: int, seed: int, stream: int) -> int:
    """The clip at ``position``: uniform over clips, or, with ``cache.groups``, genres in turn.

    Balanced: every round of ``len(groups)`` positions visits each genre once, in a seeded order, so a
    genre's k-th visit is in round k; within a genre, clips follow that genre's own seeded epochs.
    A small genre is therefore seen as often as a large one, and the stream stays a pure function.
    """
    if cache.groups is None:
        return clip_index(position, len(cache), seed, stream)
    round_, offset = divmod(position, len(cache.groups))
    genre = _permutation(len(cache.groups), seed, _mix(stream, 0xBA1), round_)[offset]
    group = cache.groups[genre]
    return group[clip_index(round_, len(group), seed, _mix(stream, genre))]


@dataclass
class Batch:
    latents: torch.Tensor  # clean latents z0, scaled
    noise: torch.Tensor
    timesteps: torch.Tensor
    caption_index: torch.Tensor


def make_batch(
    cache: ClipCache, positions: Sequence[int], seed: int, stream: int, scaling_factor: float,
    num_train_timesteps: int, noise_offset: float = 0.0,
) -> Batch:
    """Latents drawn from the cached posteriors, noise and timesteps: a pure function of positions."""
    latents, noise, timesteps, captions = [], [], [], []
    channels = cache.posterior.shape[1] // 2
    for position in positions:
        i = clip_at(cache, position, seed, stream)
        generator = torch.Generator().manual_seed(_mix(seed, stream, position))
        mean, std = cache.posterior[i, :channels], cache.posterior[i, channels:]
        latents.append((mean + std * torch.randn(mean.shape, generator=generator)) * scaling_factor)
        eps = torch.randn(mean.shape, generator=generator)
        if noise_offset:
            # Offset noise: a per-channel constant lets the model change a clip's overall loudness.
            eps = eps + noise_offset * torch.randn((channels, 1, 1), generator=generator)
        noise.append(eps)
        timesteps.append(int(torch.randint(0, num_train_timesteps, (1,), generator=generator)))
        captions.append(int(cache.caption_index[i]))
    return Batch(torch.stack(latents), torch.stack(noise), torch.tensor(timesteps), torch.tensor(captions))


def write_fingerprint(path: Path, dataset: str, class_data_dir: str | None) -> dict:
    info = {"dataset": str(dataset), "fingerprint": dataset_fingerprint(dataset)}
    if class_data_dir:
        info["class_data_dir"] = str(class_data_dir)
        info["class_fingerprint"] = dataset_fingerprint(class_data_dir)
    write_json_atomic(path, info)
    return info
