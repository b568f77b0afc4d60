"""A tiny, randomly initialised pipeline of the Riffusion v1 (Stable Diffusion 1.x) architecture.

Built offline and deterministically from a seed, for tests and the demo: the same components as
``riffusion/riffusion-model-v1`` (UNet2DConditionModel with cross-attention, AutoencoderKL with 4
latent channels and a downscale of 8, CLIP text encoder and BPE tokenizer, the PNDM scheduler that
checkpoint ships), but with a few thousand parameters each, so a 64x64 spectrogram runs a UNet step
in milliseconds on CPU. Written as a standard ``StableDiffusionPipeline`` folder (safetensors,
no safety checker), so anything that loads a diffusers SD 1.x folder loads it. Its weights are
random, but its VAE's latents have a trained VAE's statistics (below), so a short fine-tune on a CPU
learns genres from it (``configs/train/cpu_genre.yaml``).
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

#: Riffusion v1 (fine-tuned from SD 1.5) ships SD 1.x's PNDM scheduler with this configuration.
RIFFUSION_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

#: Words the tokenizer learns its merges from, so that prompts become multi-character tokens.
_MERGE_CORPUS = (
    "instrumental saxophone flute ambient piano jazz rock drums guitar bass synth violin cello "
    "electronic techno house funk blues classical orchestral pop hip hop lofi chill beat music "
    "the and of with in on a an slow fast soft loud rain kettle door street noise"
)
_NUM_MERGES = 200
_TEXT_WIDTH = 32
#: The tiny VAE is random, but its latents have the statistics of a trained one, as the Riffusion VAE's
#: do: without them a fine-tune of the tiny model cannot learn a prompt (docs/genre.md).
#: 1. Unit variance after scaling. SD's ``scaling_factor`` (0.18215) is 1 / the std of *its* VAE's
#:    latents; the random tiny VAE's latents of spectrograms (the built-in genres and the kettle, at 64
#:    and 512 px) have a std of 0.17-0.19, so SD's factor would leave them at 0.03 of the noise.
#:    1 / 0.173 (90 clips of the built-in genres) is the same rule applied to this VAE.
SCALING_FACTOR = 5.78
#: 2. A narrow posterior. A trained SD VAE's posterior is nearly a point (its KL weight is tiny), so
#:    ``latent_dist.sample()`` is its mean to within a few percent. A random VAE predicts a log-variance
#:    near 0: its samples would be 5x more posterior noise than signal, which is all a fine-tune would
#:    see. The log-variance half of ``quant_conv`` is set to this constant instead (std 0.0067 before
#:    scaling, 4 % of the latents' spread).
POSTERIOR_LOGVAR = -10.0

def _learn_merges(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Greedy byte-pair merges over ``words`` (CLIP style: the last symbol of a word ends in </w>)."""
    split = collections.Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in words)
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for symbols, count in split.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break
        # Highest count first, ties broken by the pair itself so the result never depends on order.
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = collections.Counter()
        for symbols, count in split.items():
            out, i = [], 0
            while i < len(symbols):
                if symbols[i : i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += count
        split = merged
    return merges


def build_tiny_tokenizer():
    """A CLIP BPE tokenizer over all 256 byte symbols plus a few learned merges (encodes any text)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [c + "</w>" for c in alphabet]
    merges = _learn_merges(_MERGE_CORPUS.split(), _NUM_MERGES)
    tokens += [a + b for a, b in merges if a + b not in tokens]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_tiny_components(seed: int = 0) -> dict:
    """In-memory components (vae, text_encoder, tokenizer, unet, scheduler), identical for a seed."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    # fork_rng: building the models must not move the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=_TEXT_WIDTH,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        torch.manual_seed(seed + 1)
        # Four blocks give SD's downscale of 2**3 = 8 (vae_scale_factor), with few channels each.
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=512,
            scaling_factor=SCALING_FACTOR,
        )
        with torch.no_grad():
            latent_channels = vae.config.latent_channels
            vae.quant_conv.weight[latent_channels:] = 0.0
            vae.quant_conv.bias[latent_channels:] = POSTERIOR_LOGVAR
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=_TEXT_WIDTH,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                max_position_embeddings=77,
                projection_dim=_TEXT_WIDTH,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    for model in (unet, vae, text_encoder):
        model.eval()
    scheduler = PNDMScheduler(**RIFFUSION_SCHEDULER_CONFIG)
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
    }


def save_tiny_pipeline(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny pipeline as a diffusers folder (safetensors) and return its path."""
    return save_pipeline_folder(build_tiny_components(seed), out_dir)


def save_pipeline_folder(components: dict, out_dir: str | os.PathLike) -> Path:
    """Write SD 1.x ``components`` (vae, text_encoder, tokenizer, unet, scheduler) as a diffusers folder
    (safetensors, no safety checker) with the tokenizer's vocab.json and merges.txt too; return its path."""
    from diffusers import StableDiffusionPipeline

    out = Path(out_dir)
    pipe = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(out, safe_serialization=True)
    _write_slow_tokenizer_files(pipe.tokenizer, out / "tokenizer")
    return out


def _write_slow_tokenizer_files(tokenizer, folder: Path) -> None:
    """vocab.json + merges.txt beside tokenizer.json, for readers that build CLIP's BPE from them."""
    from riffmask.common.io import write_json_atomic, write_text_atomic

    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    write_json_atomic(folder / "vocab.json", model["vocab"])
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    write_text_atomic(folder / "merges.txt", "#version: 0.2\n" + "".join(m + "\n" for m in merges))
