"""LAION-CLAP through transformers: audio embeddings for FAD and the CLAP score (SPEC §4).

The paper's embedding is LAION-CLAP ``630k-audioset-best`` (HTSAT-tiny, unfused, 48 kHz). On the
Hub its transformers conversion is ``laion/clap-htsat-unfused`` (the CLAP authors say the unfused
and fused transformers models come from ``630k-audioset-best`` and ``630k-audioset-fusion-best``).

FAD frames follow fadtk's ``clap-laion-audio``: the sound at 48 kHz, quantised to 16 bits, cut into
10 s windows starting every 1 s (the last ones zero-padded to 10 s), one L2-normalised embedding
per window. The CLAP score embeds a whole clip in one window when it fits (shorter clips are
repeat-padded, as LAION-CLAP does) and averages non-overlapping windows otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from riffmask.common.errors import RiffmaskError

log = logging.getLogger(__name__)

DEFAULT_CLAP_MODEL = "laion/clap-htsat-unfused"


def _quantize16(audio: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(audio, -1.0, 1.0) * 32767.0) / 32767.0).astype(np.float32)


def fad_windows(audio: np.ndarray, window: int, hop: int) -> np.ndarray:
    """(count, window) windows starting every ``hop`` samples; the tail ones padded with zeros."""
    audio = np.asarray(audio, dtype=np.float32)
    starts = range(0, max(len(audio), 1), hop)
    out = np.zeros((len(starts), window), dtype=np.float32)
    for row, start in enumerate(starts):
        piece = audio[start : start + window]
        out[row, : len(piece)] = piece
    return out


@dataclass
class ClapEmbedder:
    """A loaded CLAP model with its processor; embeds audio (frames x dims) and text."""

    model: object
    processor: object
    name: str = "clap-laion-audio"
    window_s: float = 10.0
    hop_s: float = 1.0
    batch_size: int = 8

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | os.PathLike = DEFAULT_CLAP_MODEL,
        revision: str | None = None,
        allow_pickle: bool = False,
        device: str = "cpu",
    ) -> ClapEmbedder:
        """Load ``ClapModel`` and ``ClapProcessor`` (a Hub id or a local folder).

        Weights are read from safetensors only, unless ``allow_pickle`` (a PyTorch ``.bin`` file,
        which transformers opens with ``weights_only``); remote code is never run.
        """
        from transformers import ClapModel, ClapProcessor

        kwargs = {"revision": revision, "trust_remote_code": False}
        try:
            model = ClapModel.from_pretrained(str(model_id), use_safetensors=None if allow_pickle else True, **kwargs)
            processor = ClapProcessor.from_pretrained(str(model_id), **kwargs)
        except OSError as exc:
            pickle_only = not allow_pickle and "safetensors" in str(exc)
            hint = (
                " (it has no safetensors weights; for PyTorch .bin weights pass --allow-pickle)" if pickle_only else ""
            )
            if not hint and not Path(model_id).is_dir():
                hint = (
                    "; without the network it must be in the Hugging Face cache (download it once) or a local "
                    "folder given with --clap-model"
                )
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RiffmaskError(f"cannot load CLAP model {model_id} ({first}){hint}") from None
        return cls(model=model.to(device).eval(), processor=processor)

    @property
    def sample_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def _truncation(self) -> str:
        return "fusion" if self.model.config.audio_config.enable_fusion else "rand_trunc"

    def _embed_windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = []
        device = next(self.model.parameters()).device
        for start in range(0, len(windows), self.batch_size):
            batch = [np.asarray(w, dtype=np.float64) for w in windows[start : start + self.batch_size]]
            inputs = self.processor.feature_extractor(
                batch,
                sampling_rate=self.sample_rate,
                truncation=self._truncation,
                padding="repeatpad",
                return_tensors="pt",
            )
            with torch.inference_mode():
                features = self.model.get_audio_features(**inputs.to(device)).pooler_output
            out.append(features.float().cpu().numpy())
        return np.concatenate(out, axis=0)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """FAD frames of a sound at :attr:`sample_rate`: one embedding per 10 s window, 1 s hop."""
        window, hop = int(self.window_s * self.sample_rate), int(self.hop_s * self.sample_rate)
        return self._embed_windows(list(fad_windows(_quantize16(audio), window, hop)))

    def embed_clip(self, audio: np.ndarray) -> np.ndarray:
        """One L2-normalised embedding (dims,) for a whole clip (for the CLAP score)."""
        audio = _quantize16(audio)
        window = int(self.window_s * self.sample_rate)
        pieces = [audio[i : i + window] for i in range(0, max(len(audio), 1), window)]
        if len(pieces) > 1 and len(pieces[-1]) < window // 2:
            pieces = pieces[:-1]  # a short tail would be mostly repeated padding
        mean = self._embed_windows(pieces).mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings (len(texts), dims)."""
        import torch

        device = next(self.model.parameters()).device
        tokens = self.processor.tokenizer(list(texts), padding=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            features = self.model.get_text_features(**tokens).pooler_output
        return features.float().cpu().numpy()


def clap_score(clip_embeddings: dict[str, np.ndarray], text_embedding: np.ndarray) -> list[dict]:
    """Cosine of each clip's (normalised) audio embedding with the (normalised) prompt embedding."""
    text = text_embedding / max(float(np.linalg.norm(text_embedding)), 1e-12)
    rows = []
    for name, emb in clip_embeddings.items():
        emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
        rows.append({"name": name, "clap": float(emb @ text)})
    return rows
