"""Time per metric per file on this CPU (the six real everyday sounds, 5.11 s clips).

* SSIM and chroma (SPEC §4) between each sound's spectrogram and the next sound's, as a stand-in
  for an input/output pair; chroma decodes both images with 32 Griffin-Lim iterations. The sweep
  path, where the input's chromagram is computed once and reused, is timed beside it.
* LAION-CLAP embeddings with the real architecture of ``laion/clap-htsat-unfused`` (HTSAT-tiny +
  RoBERTa, randomly initialised since the Hub is out of reach: the same FLOPs as the real model):
  FAD frames (10 s windows, 1 s hop) and the CLAP score's one-window clip embedding.
* FAD on 512-dimensional embeddings: our eigh-based trace square root against SciPy's ``sqrtm``
  (the reference, run here on the same matrices), and FAD-infinity with its default 10 sizes.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from bench.common import best_of, real_sounds, write_result
from riffmask.core.audio import load_audio
from riffmask.core.codec import audio_to_image
from riffmask.core.decode import DecodeConfig
from riffmask.core.params import PAPER_CLIP_SAMPLES
from riffmask.metrics import fad
from riffmask.metrics.clap import ClapEmbedder
from riffmask.metrics.similarity import chroma_cosine, image_chroma, pair_metrics, ssim

PGHI_32 = DecodeConfig(iterations=32, phase_start="pghi")


def sqrtm_fad(a: fad.GaussianStats, b: fad.GaussianStats) -> float:
    """The textbook formula with scipy.linalg.sqrtm (what fadtk and most FAD code call)."""
    diff = a.mu - b.mu
    root = linalg.sqrtm(a.cov @ b.cov)
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * np.trace(root).real)


def real_architecture_clap() -> ClapEmbedder:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    torch.manual_seed(0)
    model = ClapModel(ClapConfig()).eval()  # the defaults are laion/clap-htsat-unfused's architecture
    tokenizer = RobertaTokenizer()  # untrained vocabulary: only the text model's cost matters here
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tokenizer)
    return ClapEmbedder(model=model, processor=processor)


def mean_best(fn, items, repeat: int = 1) -> float:
    """Mean over ``items`` of the best of ``repeat`` timings of ``fn(item)``."""
    return float(np.mean([best_of(lambda i=i: fn(i), repeat)[0] for i in items]))


def main() -> None:
    clips = [load_audio(p)[:PAPER_CLIP_SAMPLES] for p in real_sounds()]
    images = [audio_to_image(c) for c in clips]
    pairs = list(zip(images, images[1:] + images[:1], strict=True))
    per_file: dict[str, float] = {}
    per_file["ssim_s"] = mean_best(lambda p: ssim(*p), pairs, 3)
    per_file["ssim_and_chroma_s"] = mean_best(lambda p: pair_metrics(*p), pairs)
    per_file["ssim_and_chroma_pghi_s"] = mean_best(lambda p: pair_metrics(*p, PGHI_32), pairs)
    cached = image_chroma(images[0])
    per_file["chroma_input_cached_s"] = mean_best(lambda im: chroma_cosine(cached, image_chroma(im)), images[1:])
    print(per_file, flush=True)

    clap = real_architecture_clap()
    sounds48 = [load_audio(p, sample_rate=48000, duration=PAPER_CLIP_SAMPLES / 44100) for p in real_sounds()]
    clap.embed(sounds48[0])  # warm-up
    per_file["clap_fad_frames_s"] = mean_best(clap.embed, sounds48)
    per_file["clap_score_clip_s"] = mean_best(clap.embed_clip, sounds48)
    per_file["clap_frames_per_clip"] = int(clap.embed(sounds48[0]).shape[0])
    text_s, _ = best_of(lambda: clap.embed_text(["instrumental, saxophone, flute"]), 2)
    print(per_file, flush=True)

    rng = np.random.default_rng(0)
    dims = 512
    mix = rng.standard_normal((dims, dims)) / np.sqrt(dims)
    reference = fad.gaussian_stats(rng.standard_normal((5000, dims)) @ mix)
    test = fad.gaussian_stats(rng.standard_normal((2000, dims)) @ mix + 0.05)
    ours_s, _ = best_of(lambda: fad.frechet_distance(test, reference))
    scipy_s, _ = best_of(lambda: sqrtm_fad(test, reference))
    per_file_frames = {f"f{i}": rng.standard_normal((6, dims)) @ mix for i in range(20)}
    per_file["fad_per_file_s"] = best_of(lambda: fad.per_file_fad(per_file_frames, reference))[0] / 20
    pool = rng.standard_normal((3000, dims)) @ mix
    inf_s, _ = best_of(lambda: fad.fad_infinity(pool, reference), 1)

    result = {
        "clips": len(clips),
        "clip_seconds": PAPER_CLIP_SAMPLES / 44100,
        "per_file": per_file,
        "clap_text_s": text_s,
        "clap_model": "ClapModel(ClapConfig()) = laion/clap-htsat-unfused architecture, random weights, float32",
        "fad_512d": {
            "eigh_s": ours_s,
            "scipy_sqrtm_s": scipy_s,
            "speedup_vs_sqrtm": scipy_s / ours_s,
            "value_eigh": fad.frechet_distance(test, reference),
            "value_sqrtm": sqrtm_fad(test, reference),
            "fad_infinity_s": inf_s,
            "fad_infinity_frames": int(pool.shape[0]),
        },
    }
    print(result, flush=True)
    write_result("metrics", result)


if __name__ == "__main__":
    main()
