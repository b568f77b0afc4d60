"""``riffmask generate``, ``sweep`` and ``eval`` across processes and machines with accelerate (the trainer's engine).

``accelerate launch [--num_processes N] [--num_machines M ...] -m riffmask.cli generate ...`` starts N
processes; process k takes every N-th input from the k-th (with all its prompts and variations),
on its own device, and writes those items into the one output folder. Inputs already done are
skipped as in a single process, so a killed run resumes. Once every process is through, the main
process gathers what each did and writes ``summary.json`` (and the report). ``riffmask sweep`` shares
its to-do combinations the same way (:mod:`riffmask.metrics.sweep`), ``riffmask eval fad|clap`` the
files it embeds (:func:`map_shared`).

Only the main process's exit status tells how the run went: the others return 0 once they are
through, because torchrun stops every process as soon as one exits with an error, and would stop the
main process while it writes the results.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

from riffmask.infer.config import GenerateConfig
from riffmask.infer.files import RunSummary

T = TypeVar("T")
R = TypeVar("R")

#: Set by ``accelerate launch`` (torchrun) in every process it starts.
_LAUNCHED = ("ACCELERATE_MIXED_PRECISION", "LOCAL_RANK")


def launched() -> bool:
    """Whether this process was started by ``accelerate launch`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and any(k in os.environ for k in _LAUNCHED)


def process_state():
    """accelerate's :class:`~accelerate.PartialState` of this launch (initialises the process group).

    Processes on CPUs (``ACCELERATE_USE_CPU=1``, or no CUDA) join with gloo; without saying so, accelerate
    would treat each CPU process as a launch of its own.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def leave_process_group() -> None:
    """Close this process's process group, if it joined one, before the interpreter exits: gloo's worker
    threads still running while the interpreter shuts down abort the process (SIGABRT, "terminate called
    without an active exception"), and torchrun then stops the whole launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def process_device(state) -> str:
    """This process's torch device: ``cuda:k`` for process k of a GPU launch; on CPUs plain ``cpu``, because
    accelerate's ``cpu:0`` gives other float rounding in some models (CLAP's) than ``cpu`` does."""
    return "cpu" if state.device.type == "cpu" else str(state.device)


def on_process_device(cfg: GenerateConfig, state) -> GenerateConfig:
    """``cfg`` with this process's device when it names none (the config saved with the results keeps the
    one asked for)."""
    from riffmask.common.config import replace_options

    if state is None or cfg.checkpoint.device is not None:
        return cfg
    return replace_options(cfg, device=process_device(state))


def is_mine(index: int, state) -> bool:
    """Whether item ``index`` of a shared list is this process's: process k of n takes k, k + n, ...."""
    return state is None or index % state.num_processes == state.process_index


def gather_lists(state, part: list) -> list:
    """Every process's ``part``, concatenated in process order, on every process (waits for all of them)."""
    from accelerate.utils import gather_object

    return gather_object(part) if state is not None and state.num_processes > 1 else list(part)


def map_shared(state, items: Sequence[T], fn: Callable[[T], R]) -> list[R]:
    """``[fn(item) for item in items]`` with each process computing its share, gathered in ``items``' order
    on every process (results travel pickled between processes); ``state`` None: all here."""
    mine = [(k, fn(item)) for k, item in enumerate(items) if is_mine(k, state)]
    return [result for _, result in sorted(gather_lists(state, mine), key=lambda pair: pair[0])]


def merge_summaries(parts: list[RunSummary]) -> RunSummary:
    """One summary of all processes' parts (each list in process order)."""
    merged = RunSummary()
    for part in parts:
        for f in dataclasses.fields(RunSummary):
            getattr(merged, f.name).extend(getattr(part, f.name))
    return merged


def gather_summaries(state, summary: RunSummary) -> RunSummary:
    """Every process's summary, merged, on every process (waits for all of them)."""
    return merge_summaries(gather_lists(state, [summary]))
