"""``riffmask generate`` across processes and machines with accelerate (the trainer's engine).

``accelerate launch [--num_processes N] [--num_machines M ...] -m riffmask.cli generate ...`` starts N
processes; process k takes every N-th input from the k-th (with all its prompts and variations),
on its own device, and writes those items into the one output folder. Inputs already done are
skipped as in a single process, so a killed run resumes. Once every process is through, the main
process gathers what each did and writes ``summary.json`` (and the report).
"""

from __future__ import annotations

import dataclasses
import os

from riffmask.infer.files import RunSummary

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


def merge_summaries(parts: list[RunSummary]) -> RunSummary:
    """One summary of all processes' parts (each list in process order)."""
    merged = RunSummary()
    for part in parts:
        for f in dataclasses.fields(RunSummary):
            getattr(merged, f.name).extend(getattr(part, f.name))
    return merged


def gather_summaries(state, summary: RunSummary) -> RunSummary:
    """Every process's summary, merged, on every process (waits for all of them)."""
    from accelerate.utils import gather_object

    return merge_summaries(gather_object([summary]) if state.num_processes > 1 else [summary])
