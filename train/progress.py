"""What a training run shows while it runs: a live bar on a terminal, plain log lines elsewhere.

On a terminal (stderr is a TTY) a tqdm bar shows step / total, the smoothed loss, the learning rates,
steps per second and the time left. In logs, CI or under ``nohup`` a bar's carriage returns are
noise, so the same numbers go out as one log line every ``interval_s`` seconds (and on the last step).
Only the main process reports; the others get a silent instance.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("riffmask.train")

#: Weight of the newest step in the smoothed loss (an exponential moving average over ~50 steps).
SMOOTHING = 0.02


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Progress of steps ``first + 1 .. total``; ``update`` once per optimizer step."""

    def __init__(self, total: int, first: int = 0, enabled: bool = True, interval_s: float = 30.0,
                 terminal: bool | None = None):
        self.total, self.first, self.enabled, self.interval_s = total, first, enabled, interval_s
        self.smoothed: float | None = None
        self.started = self.last_line = time.perf_counter()
        self.bar = None
        if enabled and (sys.stderr.isatty() if terminal is None else terminal):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=first, desc="training", unit="step", dynamic_ncols=True)

    def update(self, step: int, logs: dict[str, float]) -> None:
        """Record optimizer step ``step`` (1-based) with its logged scalars (``loss``, ``lr/<model>``)."""
        if not self.enabled:
            return
        loss = logs["loss"]
        self.smoothed = loss if self.smoothed is None else (1 - SMOOTHING) * self.smoothed + SMOOTHING * loss
        lrs = {k.split("/", 1)[1]: v for k, v in logs.items() if k.startswith("lr/")}
        if self.bar is not None:
            self.bar.set_postfix({"loss": f"{self.smoothed:.4f}", **{f"lr {k}": f"{v:.1e}" for k, v in lrs.items()}},
                                 refresh=False)
            self.bar.update(step - self.bar.n)
            return
        now = time.perf_counter()
        if now - self.last_line >= self.interval_s or step == self.total:
            self.last_line = now
            rate = (step - self.first) / max(now - self.started, 1e-9)
            left = (self.total - step) / rate if rate else float("inf")
            lr_text = " ".join(f"lr/{k} {v:.2e}" for k, v in lrs.items())
            log.info("step %d/%d  loss %.4f (smoothed %.4f)  %s  %.2f steps/s  %s left", step, self.total, loss,
                     self.smoothed, lr_text, rate, _duration(left))

    def message(self, text: str) -> None:
        """A line that does not break the bar (validation results, where the outputs are)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            log.info("%s", text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
