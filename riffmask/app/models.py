"""The app's model cache: each checkpoint is loaded once; LoRAs and the scheduler change on it.

A request names its checkpoint, LoRAs, scales and scheduler like ``riffmask generate`` does. The base
pipeline is loaded by :func:`riffmask.infer.generate.load_pipeline` the first time and kept; LoRAs
are added to it as adapters the first time they are asked for and only switched on, off or
re-weighted after that, so trying scales never reloads the base. A checkpoint or LoRA that cannot
be loaded raises the CLI's :class:`RiffmaskError` and leaves the cache as it was, so the model
loaded before keeps working.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from riffmask.common.config import config_dict, replace_options
from riffmask.infer.config import GenerateConfig
from riffmask.infer.load import activate_loras, load_lora, load_pipeline, set_scheduler

#: The options that decide which base weights are loaded, and how (everything else changes per call).
BASE_KEYS = ("model", "revision", "single_file_config", "allow_pickle", "device", "dtype")


def leaves(mapping: dict[str, Any]) -> dict[str, Any]:
    """The leaf options of a (possibly sectioned) config dict, by their unique names."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        out.update(leaves(value) if isinstance(value, dict) else {key: value})
    return out


@dataclass
class LoadedModel:
    """One base pipeline with the adapters added to it so far and its own scheduler."""

    pipe: Any
    scheduler: Any
    adapters: dict[str, str] = field(default_factory=dict)  # LoRA reference -> adapter name

    def configure(self, cfg: GenerateConfig) -> None:
        """Switch to ``cfg``'s LoRAs (loading new ones), their scales and its scheduler."""
        options = leaves(config_dict(cfg))
        names = []
        for ref in options["lora"]:
            if ref not in self.adapters:
                name = f"lora_{len(self.adapters)}"
                load_lora(self.pipe, ref, name, options["allow_pickle"])
                self.adapters[ref] = name
            names.append(self.adapters[ref])
        if names:
            self.pipe.enable_lora()
            activate_loras(self.pipe, names, options["lora_scale"])
        elif self.adapters:
            self.pipe.disable_lora()
        # The checkpoint's own scheduler first: a named one is configured from it, as the CLI does.
        self.pipe.scheduler = self.scheduler
        set_scheduler(self.pipe, options["scheduler"])


class ModelCache:
    """Pipelines by base checkpoint; the last one loaded successfully replaces the others (memory)."""

    def __init__(self) -> None:
        self._loaded: dict[tuple, LoadedModel] = {}
        #: Held while a pipeline is configured or run: one generation at a time, whatever the caller.
        self.lock = threading.Lock()

    @staticmethod
    def key(cfg: GenerateConfig) -> tuple:
        options = leaves(config_dict(cfg))
        return tuple(str(options[k]) for k in BASE_KEYS)

    def pipeline(self, cfg: GenerateConfig):
        """The pipeline for ``cfg``, configured for its LoRAs and scheduler; call with :attr:`lock` held."""
        key = self.key(cfg)
        loaded = self._loaded.get(key)
        if loaded is None:
            pipe = load_pipeline(replace_options(cfg, lora=[], lora_scale=[], scheduler=None))
            loaded = LoadedModel(pipe, pipe.scheduler)
            self._loaded = {key: loaded}
        loaded.configure(cfg)
        return loaded.pipe
