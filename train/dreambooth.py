"""DreamBooth fine-tuning of a Riffusion pipeline on spectrograms made by `riffmask prep`.

    accelerate launch train/dreambooth.py --config configs/t4_lora.yaml dataset=data/prep key=value ...
    riffmask train --config cpu_smoke dataset=data/prep

The whole recipe reads top to bottom in ``train`` below: load, encode every clip once, build the
optimizer, resume, loop, save. Helpers live beside it: ``config`` (options), ``data`` (caching and
the seeded sample stream), ``loss``, ``schedule`` (text-encoder-first phases, learning rates),
``checkpoint`` (atomic, exact resume), ``lora`` (adapters, exports), ``validation``, ``hub``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file (`accelerate launch train/dreambooth.py`): its folder holds modules named config, data,
    # models...; take it off the path so they never shadow a library's. The recipe imports as riffmask.train.
    sys.path.pop(0)

import torch

from riffmask.common.config import ConfigError, config_dict, load_config, save_config
from riffmask.data_prep.readers import dataset_fingerprint, load_prepared
from riffmask.train import checkpoint, data, lora
from riffmask.train.config import TrainConfig
from riffmask.train.loss import per_sample_loss, training_target
from riffmask.train.models import (
    fit_deepspeed,
    load_models,
    make_optimizer,
    place,
    restore_fp32_weights,
    trainable_names,
    weight_dtype,
)
from riffmask.train.progress import Progress
from riffmask.train.run_folder import check_run_folder
from riffmask.train.schedule import Schedule, lr_factor

log = logging.getLogger("riffmask.train")
TRAINING_LOG = "training_log.jsonl"


def train(cfg: TrainConfig) -> Path:
    """Run the recipe described by ``cfg``; return the output folder."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    out = Path(cfg.output_dir)
    new_folder = not out.exists()
    try:
        return _train(cfg)
    except BaseException:
        if new_folder:  # a run that failed before writing anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    finally:
        if PartialState().num_processes == 1:
            # accelerate keeps its state per interpreter: forget it so that a notebook (or a test)
            # can train again with other settings, e.g. another mixed precision.
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()


def _train(cfg: TrainConfig) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed

    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        # With the text-encoder-first schedule, the UNet is frozen for a while: DDP must tolerate it.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=bool(cfg.text_encoder_steps))],
    )
    set_seed(cfg.seed)  # LoRA initialisation and dropout; data and noise have their own seeded streams
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    cpu_offload = False
    if accelerator.state.deepspeed_plugin is not None:
        if cfg.train_text_encoder:
            raise ConfigError("train_text_encoder: DeepSpeed trains one model per engine; set it to false")
        cpu_offload = fit_deepspeed(accelerator.state.deepspeed_plugin, cfg, world)
    fingerprint = dataset_fingerprint(cfg.dataset)
    check_run_folder(cfg, fingerprint, accelerator.is_main_process)  # another run there: refuse or clear
    accelerator.wait_for_everyone()
    resume_from = checkpoint.resolve_resume(cfg.resume, out / "checkpoints")  # checked before models load
    if resume_from is not None and checkpoint.read_state(resume_from).get("dataset_fingerprint") != fingerprint:
        raise ConfigError(f"resume: {resume_from} was trained on different data; exact resume is impossible")

    # ---------------------------------------------------------------- 1. models
    m = load_models(cfg)
    unet, text_encoder, vae, noise_scheduler = m.unet, m.text_encoder, m.vae, m.noise_scheduler
    vae.requires_grad_(False)
    if cfg.mode == "lora":
        lora.add_adapters(unet, text_encoder, cfg)
    else:
        unet.requires_grad_(True)
        text_encoder.requires_grad_(cfg.train_text_encoder)
    trained = {"unet": unet, **({"text_encoder": text_encoder} if cfg.train_text_encoder else {})}
    trained_names = {name: trainable_names(model) for name, model in trained.items()}
    dtype = weight_dtype(cfg.mixed_precision)
    for name, model in (("unet", unet), ("text_encoder", text_encoder)):
        place(model, device, dtype, trained_names.get(name, []))
    vae.to(device)  # fp32 while it encodes the clips once; half precision afterwards
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()

    # ---------------------------------------------------------------- 2. data, encoded once per clip
    prepared = load_prepared(cfg.dataset)
    rows = list(prepared["train"])
    if not rows:
        raise ConfigError(f"dataset: {cfg.dataset!r} has no training clips")

    def encode(clips: list[dict], captions: list[str] | None = None) -> data.ClipCache:
        captions = captions or data.captions_for(clips, cfg.captions, cfg.instance_template, cfg.instance_prompt)
        return data.build_cache(clips, captions, vae, m.tokenizer, cfg.resolution)

    instances = encode(rows)
    if cfg.balance_genres:
        instances.groups = data.genre_groups(rows)
    held_out_rows = list(prepared["validation"]) if "validation" in prepared else []
    held_out = encode(held_out_rows) if held_out_rows else None
    classes = None
    if cfg.with_prior_preservation:
        from riffmask.train.prior import class_rows

        class_images = class_rows(cfg, m, accelerator)
        classes = encode(class_images, [cfg.class_prompt] * len(class_images))
    vae.to(dtype=dtype)
    scaling = vae.config.scaling_factor
    num_timesteps = noise_scheduler.config.num_train_timesteps

    # ---------------------------------------------------------------- 3. optimizer, schedule, accelerate
    schedule = Schedule(cfg.max_train_steps, cfg.train_text_encoder, cfg.text_encoder_steps)
    groups, factors = [], []
    for name, model in trained.items():
        lr = cfg.learning_rate if name == "unet" else cfg.text_encoder_learning_rate
        groups.append({"params": [p for p in model.parameters() if p.requires_grad], "lr": lr})
        start, end = schedule.span(name)
        factors.append(functools.partial(lr_factor, start=start, end=end, kind=cfg.lr_scheduler,
                                         warmup=cfg.lr_warmup_steps))
    optimizer = make_optimizer(cfg, groups, cpu_offload)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    *wrapped, optimizer = accelerator.prepare(*trained.values(), optimizer)
    wrapped = dict(zip(trained, wrapped, strict=True))
    accelerator.register_for_checkpointing(lr_scheduler)  # not prepared: it steps once per optimizer step
    checkpoint.register_hooks(accelerator, {n: (trained[n], trained_names[n]) for n in trained})
    params = [p for group in groups for p in group["params"]]

    # ---------------------------------------------------------------- 4. resume
    first_step = 0
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        first_step = checkpoint.read_state(resume_from)["step"]
        log.info("resumed from %s at step %d", resume_from, first_step)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "training_config.yaml")
        data.write_fingerprint(out / "dataset_fingerprint.json", cfg.dataset, cfg.class_data_dir)
        _truncate_log(out, first_step)
        accelerator.init_trackers(cfg.tracker_project_name, config=_scalars(cfg),
                                  init_kwargs={"wandb": {"dir": str(out)}})
    validator = None
    if cfg.validation_steps and accelerator.is_main_process:
        from riffmask.train.validation import Validator

        validator = Validator(cfg, m, held_out, out / "validation", instances.captions[0], rows, held_out_rows)

    log.info("%d clips, %d process(es) x batch %d x %d accumulation = %d clips per step; steps %d..%d",
             len(instances), world, cfg.train_batch_size, cfg.gradient_accumulation_steps,
             world * cfg.train_batch_size * cfg.gradient_accumulation_steps, first_step + 1, cfg.max_train_steps)

    # ---------------------------------------------------------------- 5. the loop
    progress = Progress(cfg.max_train_steps, first_step, enabled=accelerator.is_main_process)
    if validator is not None and first_step == 0:  # the base model's numbers, to compare every step against
        results = validator.run(0, accelerator, unet, text_encoder, vae, media=False)
        progress.message(f"validation of the base model: {validator.describe(results)}")
        accelerator.log(results, step=0)
    phase = None
    for step in range(first_step, cfg.max_train_steps):
        if schedule.phase(step) != phase:
            phase = schedule.phase(step)
            unet.requires_grad_(False)
            text_encoder.requires_grad_(False)
            for name, on in (("unet", phase.unet), ("text_encoder", phase.text_encoder)):
                if name in trained:
                    model_params = dict(trained[name].named_parameters())
                    for param_name in trained_names[name]:
                        model_params[param_name].requires_grad_(on)
                    trained[name].train(on)
            # A frozen text encoder gives the same embedding every step: compute each caption once.
            for clips in filter(None, (instances, classes, held_out)):
                clips.embeddings = None if phase.text_encoder else data.encode_captions(text_encoder, clips.input_ids)

        step_loss = torch.zeros((), device=device)
        for micro in range(cfg.gradient_accumulation_steps):
            micro_step = step * cfg.gradient_accumulation_steps + micro
            positions = data.batch_positions(micro_step, cfg.train_batch_size, rank, world)
            batches = [(instances, data.make_batch(instances, positions, cfg.seed, data.INSTANCE, scaling,
                                                   num_timesteps, cfg.noise_offset))]
            if classes is not None:
                batches.append((classes, data.make_batch(classes, positions, cfg.seed, data.CLASS, scaling,
                                                         num_timesteps, cfg.noise_offset)))
            with accelerator.accumulate(*wrapped.values()):
                losses = diffusion_losses(batches, wrapped["unet"], wrapped.get("text_encoder", text_encoder),
                                          noise_scheduler, m.prediction_type, cfg.snr_gamma, device,
                                          dtype if accelerator.state.deepspeed_plugin is not None else None)
                loss = losses[0].mean()
                if len(losses) > 1:
                    loss = loss + cfg.prior_loss_weight * losses[1].mean()
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach() / cfg.gradient_accumulation_steps
        logs = {"loss": accelerator.reduce(step_loss, "mean").item()}
        logs.update({f"lr/{name}": lr for name, lr in zip(trained, lr_scheduler.get_last_lr(), strict=True)})
        lr_scheduler.step()
        done = step + 1
        if cfg.checkpointing_steps and done % cfg.checkpointing_steps == 0:
            checkpoint.save_checkpoint(accelerator, out / "checkpoints", done,
                                       {"dataset_fingerprint": fingerprint}, cfg.checkpoints_total_limit)
        progress.update(done, logs)
        if validator is not None and (done % cfg.validation_steps == 0 or done == cfg.max_train_steps):
            results = validator.run(done, accelerator, accelerator.unwrap_model(unet), text_encoder, vae)
            progress.message(f"validation at step {done}: {validator.describe(results)}")
            logs.update(results)
        if device.type == "cuda":  # the run's peak so far, validation included: whether a recipe fits a card
            logs["gpu_memory_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
        if accelerator.is_main_process:
            accelerator.log(logs, step=done)
            _append_log(out / TRAINING_LOG, {"step": done, **logs})
        accelerator.wait_for_everyone()

    # ---------------------------------------------------------------- 6. outputs
    progress.close()
    if accelerator.state.deepspeed_plugin is not None and dtype != torch.float32:
        restore_fp32_weights(unet, trained_names["unet"])
    if accelerator.is_main_process:
        unet_out, te_out = accelerator.unwrap_model(unet), accelerator.unwrap_model(text_encoder)
        if cfg.mode == "lora":
            lora.save_lora(out, unet_out, te_out, cfg.train_text_encoder, cfg.alpha, cfg.kohya_export)
        else:
            save_pipeline(cfg, out, unet_out, te_out if cfg.train_text_encoder else None, m.prediction_type)
        from riffmask.train.hub import publish, write_model_card

        write_model_card(out)
        if cfg.push_to_hub:
            publish(out, cfg.hub_model_id, private=cfg.hub_private)
        log.info("model: %s", out.resolve())
        log.info("log: %s", (out / TRAINING_LOG).resolve())
        if validator is not None:
            log.info("validation audio: %s", validator.folder.resolve())
    accelerator.end_training()
    return out


def diffusion_losses(batches, unet, text_encoder, noise_scheduler, prediction_type, snr_gamma, device,
                     input_dtype: torch.dtype | None = None):
    """Per-sample losses of each (cache, batch) pair, from one UNet forward over all of them.

    ``input_dtype``: the dtype of the UNet's inputs when no autocast casts them (DeepSpeed runs the
    module itself in half precision).
    """
    latents = torch.cat([b.latents for _, b in batches]).to(device)
    noise = torch.cat([b.noise for _, b in batches]).to(device)
    timesteps = torch.cat([b.timesteps for _, b in batches]).to(device)
    states = []
    for cache, batch in batches:
        if cache.embeddings is not None:
            states.append(cache.embeddings[batch.caption_index].to(device))
        else:
            states.append(text_encoder(cache.input_ids[batch.caption_index].to(device))[0])
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    states = torch.cat(states)
    if input_dtype is not None:
        noisy, states = noisy.to(input_dtype), states.to(input_dtype)
    pred = unet(noisy, timesteps, states).sample
    target = training_target(noise_scheduler, latents, noise, timesteps, prediction_type)
    losses = per_sample_loss(pred, target, timesteps, noise_scheduler, prediction_type, snr_gamma)
    return list(losses.split([len(b.timesteps) for _, b in batches]))


def save_pipeline(cfg: TrainConfig, out: Path, unet, text_encoder, prediction_type: str) -> None:
    """The fine-tuned diffusers pipeline (safetensors): trained parts from memory, the rest from the base."""
    from diffusers import StableDiffusionPipeline

    extra = {"text_encoder": text_encoder} if text_encoder is not None else {}
    pipe = StableDiffusionPipeline.from_pretrained(
        cfg.pretrained_model_name_or_path, revision=cfg.revision, unet=unet, **extra
    )
    pipe.scheduler.register_to_config(prediction_type=prediction_type)
    pipe.save_pretrained(out, safe_serialization=True)


def _scalars(cfg: TrainConfig) -> dict:
    """The config as tracker hyper-parameters (trackers accept only scalars)."""
    return {k: v for k, v in config_dict(cfg).items() if isinstance(v, int | float | str | bool)}


def read_training_log(out_dir: str | os.PathLike) -> list[dict]:
    """The per-step records of a run's ``training_log.jsonl`` (none before its first step)."""
    path = Path(out_dir) / TRAINING_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _truncate_log(out_dir: Path, step: int) -> None:
    """Drop log lines beyond ``step`` (written by a run that died after its last checkpoint)."""
    if not (out_dir / TRAINING_LOG).exists():
        return
    keep = [record for record in read_training_log(out_dir) if record["step"] <= step]
    from riffmask.common.io import write_text_atomic

    write_text_atomic(out_dir / TRAINING_LOG, "".join(json.dumps(record) + "\n" for record in keep))


def main(argv: list[str] | None = None) -> int:
    """``accelerate launch train/dreambooth.py --config X.yaml key=value ...``"""
    import argparse

    from riffmask.common.config import split_overrides
    from riffmask.common.errors import RiffmaskError
    from riffmask.common.logs import setup_logging

    words, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML recipe: a path or a bundled name (configs/)")
    args = parser.parse_args(words)
    setup_logging()
    try:
        train(load_config(TrainConfig, args.config, overrides))
    except RiffmaskError as exc:
        print(f"dreambooth: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
