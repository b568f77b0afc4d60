"""Which model trains when, and at what learning rate.

``train_text_encoder`` with ``text_encoder_steps: N > 0`` is TheLastBen's fast-DreamBooth schedule:
the text encoder alone for the first N steps, then the UNet alone. With N = 0 both train together
for the whole run (diffusers' ``--train_text_encoder``). Each model's learning-rate curve (warm-up,
then constant / linear / cosine decay) spans only its own phase and is 0 outside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    unet: bool
    text_encoder: bool


@dataclass(frozen=True)
class Schedule:
    max_train_steps: int
    train_text_encoder: bool
    text_encoder_steps: int

    def phase(self, step: int) -> Phase:
        if not self.train_text_encoder:
            return Phase(unet=True, text_encoder=False)
        if self.text_encoder_steps == 0:
            return Phase(unet=True, text_encoder=True)
        first = step < self.text_encoder_steps
        return Phase(unet=not first, text_encoder=first)

    def span(self, model: str) -> tuple[int, int]:
        """The steps [start, end) during which ``model`` ("unet" or "text_encoder") trains."""
        if model == "text_encoder" and self.text_encoder_steps:
            return 0, self.text_encoder_steps
        if model == "unet" and self.train_text_encoder and self.text_encoder_steps:
            return self.text_encoder_steps, self.max_train_steps
        return 0, self.max_train_steps


def lr_factor(step: int, start: int, end: int, kind: str, warmup: int) -> float:
    """Multiplier of the base learning rate at ``step`` for a phase running over [start, end)."""
    if not start <= step < end:
        return 0.0
    local, length = step - start, end - start
    if kind != "constant" and local < warmup:
        return (local + 1) / (warmup + 1)
    if kind in ("constant", "constant_with_warmup"):
        return 1.0
    progress = (local - warmup) / max(1, length - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
