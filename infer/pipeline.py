"""Masked differential img2img on a Stable Diffusion 1.x / Riffusion checkpoint (SPEC §3).

A per-pixel keep schedule on top of ordinary img2img: the input image is encoded once (draw 1 of the
generator), one noise tensor is drawn (draw 2), and before every denoising step ``i > 0`` the latent
is reset to the input noised to that step wherever the mask is brighter than ``i / n``. White in the
mask keeps the input longest, black is plain img2img. With one window this is the paper's method,
draw for draw; ``window_width`` extends it to images of any width (see :meth:`__call__`).

Everything around the loop is diffusers' own: prompt encoding, timestep selection, scheduler kwargs
and LoRA / textual-inversion / single-file loading come from ``StableDiffusionImg2ImgPipeline``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.loaders import FromSingleFileMixin, StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin
from diffusers.pipelines.pipeline_utils import StableDiffusionMixin
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import (
    retrieve_latents,
    retrieve_timesteps,
)
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from riffmask.infer.loop import circular_time_padding
from riffmask.infer.windows import window_layout

MaskInput = PIL.Image.Image | np.ndarray | torch.Tensor | list[PIL.Image.Image] | list[np.ndarray]
_Img2Img = StableDiffusionImg2ImgPipeline


def mask_to_latent(mask: MaskInput, size: tuple[int, int]) -> torch.Tensor:
    """Mask as float32 (B, 1, h, w) in [0, 1] at latent size ``size``.

    A PIL image or uint8 array is read as grey / 255; float arrays and tensors are taken as they are.
    Resized with bilinear interpolation, ``align_corners=False``, no antialiasing (SPEC §3).
    """
    items = mask if isinstance(mask, list) else [mask]
    tensors = []
    for item in items:
        if isinstance(item, PIL.Image.Image):
            item = np.asarray(item.convert("L"))
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(item.astype(np.float32) / 255.0 if item.dtype == np.uint8 else item)
        t = item.float()
        t = t.reshape(1, 1, *t.shape[-2:]) if t.ndim in (2, 3) else t
        tensors.append(t)
    grey = torch.cat(tensors)
    return F.interpolate(grey, size=size, mode="bilinear", align_corners=False, antialias=False)


def _pixel_size(image: PipelineImageInput) -> tuple[int, int]:
    """(width, height) of a PIL image, an (H, W, C) array or a (B, C, H, W) tensor, or a list of them."""
    first = image[0] if isinstance(image, list) else image
    if isinstance(first, PIL.Image.Image):
        return first.size
    shape = first.shape
    return (shape[-1], shape[-2]) if isinstance(first, torch.Tensor) else (shape[-2], shape[-3])


class MaskedRiffusionPipeline(
    DiffusionPipeline,
    StableDiffusionMixin,
    TextualInversionLoaderMixin,
    StableDiffusionLoraLoaderMixin,
    FromSingleFileMixin,
):
    """Mask-based differential img2img for Riffusion spectrograms (any SD 1.x checkpoint).

    Build it from a diffusers folder (``from_pretrained``), from another loaded pipeline
    (``MaskedRiffusionPipeline.from_pipe(sd_pipe)`` shares its modules) or from in-memory modules
    (the five ``component_names``).
    Supports ``.to()``, ``enable_model_cpu_offload()``, progress bars, LoRA adapters and
    ``callback_on_step_end``.
    """

    component_names = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    # Reused, not copied: these read only the five components that this pipeline shares with img2img.
    encode_prompt = _Img2Img.encode_prompt
    prepare_extra_step_kwargs = _Img2Img.prepare_extra_step_kwargs
    get_timesteps = _Img2Img.get_timesteps
    guidance_scale = _Img2Img.guidance_scale
    clip_skip = _Img2Img.clip_skip
    do_classifier_free_guidance = _Img2Img.do_classifier_free_guidance
    cross_attention_kwargs = _Img2Img.cross_attention_kwargs
    num_timesteps = _Img2Img.num_timesteps
    interrupt = _Img2Img.interrupt

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if vae is not None else 8
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    # ------------------------------------------------------------------ latents
    def encode_image(
        self,
        image: torch.Tensor,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> torch.Tensor:
        """Scaled latents z0 (B, C, h, w) of a [-1, 1] image batch: draw 1 of each generator.

        Mirrors img2img's ``prepare_latents`` up to the noise: with a list of generators every item
        samples from its own generator; with one generator the image batch samples once.
        """
        image = image.to(device=self._execution_device, dtype=self.vae.dtype)
        if isinstance(generator, list):
            if len(generator) != batch_size:
                raise ValueError(f"got {len(generator)} generators for a batch of {batch_size}")
            if image.shape[0] == 1:
                # One encode, one sample per generator: the draws of encoding the image B times.
                dist = self.vae.encode(image)
                latents = torch.cat([retrieve_latents(dist, generator=g) for g in generator])
            else:
                latents = torch.cat(
                    [retrieve_latents(self.vae.encode(image[i : i + 1]), generator=g) for i, g in enumerate(generator)]
                )
        else:
            latents = retrieve_latents(self.vae.encode(image), generator=generator)
        latents = latents * self.vae.config.scaling_factor
        if latents.shape[0] != batch_size:
            if batch_size % latents.shape[0]:
                raise ValueError(f"cannot spread {latents.shape[0]} images over a batch of {batch_size}")
            latents = latents.repeat(batch_size // latents.shape[0], 1, 1, 1)
        return latents

    def _guided_noise(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        embeds: dict[int, torch.Tensor],
        groups: list[list[slice | torch.Tensor]],
        weights: list[torch.Tensor],
    ) -> torch.Tensor:
        """Guided noise prediction for the whole latent, one UNet batch per group of windows.

        ``embeds[k]`` holds the text embeddings laid out for a group of ``k`` windows.
        """
        if len(groups) == 1 and len(groups[0]) == 1:
            return self._predict(latents, t, embeds[1])  # one window: plain img2img's single call
        batch = latents.shape[0]
        total = torch.zeros_like(latents)
        norm = torch.zeros(1, 1, 1, latents.shape[-1], device=latents.device, dtype=latents.dtype)
        weight_of = iter(weights)
        for group in groups:
            noise = self._predict(torch.cat([latents[..., w] for w in group]), t, embeds[len(group)])
            for j, w in enumerate(group):
                weight = next(weight_of).to(latents.device, latents.dtype)
                total[..., w] += noise[j * batch : (j + 1) * batch] * weight
                norm[..., w] += weight
        return total / norm

    def _predict(self, tiles: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """One UNet call on ``tiles`` (with their unconditional copies under guidance), guided."""
        model_input = torch.cat([tiles] * 2) if self.do_classifier_free_guidance else tiles
        model_input = self.scheduler.scale_model_input(model_input, t)
        noise = self.unet(
            model_input,
            t,
            encoder_hidden_states=embeds,
            cross_attention_kwargs=self.cross_attention_kwargs,
            return_dict=False,
        )[0]
        if self.do_classifier_free_guidance:
            uncond, cond = noise.chunk(2)
            noise = uncond + self.guidance_scale * (cond - uncond)
        return noise

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: PipelineImageInput = None,
        mask_image: MaskInput = None,
        strength: float = 0.8,
        num_inference_steps: int = 50,
        guidance_scale: float = 8.0,
        negative_prompt: str | list[str] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float = 0.0,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        window_width: int | None = None,
        window_overlap: int = 128,
        windows_per_batch: int | None = None,
        loop: bool = False,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | tuple[str, ...] = ("latents",),
    ) -> StableDiffusionPipelineOutput | tuple:
        """Generate from ``image`` (spectrogram, RGB) under ``mask_image`` (grey; white keeps the input).

        Args:
            prompt: one prompt, or one per batch item (variations are batch items).
            image / mask_image: one for the whole batch, or one per item; sizes multiples of 8.
            strength, num_inference_steps, guidance_scale: as diffusers' img2img (SPEC §3: ``k =
                min(int(N * strength), N)`` steps are run; guidance applies when above 1).
            generator: a CPU ``torch.Generator`` (or one per item); it draws the VAE sample first,
                then the one noise tensor shared by every step.
            window_width, window_overlap: in image pixels. Images wider than ``window_width`` are
                denoised as overlapping windows of that width, all in one UNet batch per step; the
                windows' guided noise predictions are cross-faded over the overlap and the scheduler
                steps the whole latent at once (MultiDiffusion, Bar-Tal et al. 2023). The latent is
                a single state, so there are no seams to hide afterwards, and the model still sees
                the 512-px context it was trained on. ``None``: the whole image in one pass.
            windows_per_batch: at most this many windows per UNet call (bounds memory for long
                sounds: each call holds windows x batch items x 2 for guidance); ``None``: all.
            loop: the width is a circle (a seamless loop): for this call every convolution of the VAE,
                and of the UNet when one window holds the whole width, pads time circularly
                (:func:`~riffmask.infer.loop.circular_time_padding`); wider loops are denoised as
                windows that wrap around the end. Needs the VAE's tiling off (its tiles would not wrap).
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            callback_on_step_end: called after each step as in diffusers, with the tensors named in
                ``callback_on_step_end_tensor_inputs``; a ``"latents"`` it returns replaces the latent.
        """
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback tensor inputs {unknown} not in {self._callback_tensor_inputs}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if image is None or mask_image is None:
            raise ValueError("both image and mask_image are required")
        self._guidance_scale = guidance_scale
        self._clip_skip = clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        self._interrupt = False
        if prompt_embeds is not None:
            batch_size = prompt_embeds.shape[0]
        else:
            batch_size = 1 if isinstance(prompt, str) else len(prompt)
        device = self._execution_device

        # 1. Text.
        lora_scale = (cross_attention_kwargs or {}).get("scale")
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt,
            device,
            1,
            self.do_classifier_free_guidance,
            negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            lora_scale=lora_scale,
            clip_skip=self.clip_skip,
        )

        if loop and self.vae.use_tiling:
            raise ValueError("loop needs the VAE's tiling off: its tiles would not wrap around")
        # The UNet wraps only when it sees the whole circle: a window is a crop, whose two ends are
        # not neighbours; windows wrap around the end instead, blended over their overlaps.
        whole = window_width is None or _pixel_size(image)[0] <= window_width
        wrapped = (self.vae, self.unet) if whole else (self.vae,)
        circular = circular_time_padding(*wrapped) if loop else contextlib.nullcontext()
        with circular:
            # 2. Image, timesteps, mask.
            # Checked before preprocessing, which would otherwise resize: a resized spectrogram changes pitch.
            width, height = _pixel_size(image)
            if height % self.vae_scale_factor or width % self.vae_scale_factor:
                raise ValueError(f"image size {width}x{height} must be a multiple of {self.vae_scale_factor}")
            pixels = self.image_processor.preprocess(image, height=height, width=width)
            timesteps, _ = retrieve_timesteps(self.scheduler, num_inference_steps, device)
            timesteps, _ = self.get_timesteps(num_inference_steps, strength, device)
            n = len(timesteps)
            if n == 0:
                raise ValueError(f"strength {strength} with {num_inference_steps} steps leaves no step to run")
            latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
            mask = mask_to_latent(mask_image, latent_size).to(device)
            if mask.shape[0] not in (1, batch_size):
                raise ValueError(f"got {mask.shape[0]} masks for a batch of {batch_size}")
            # float32 thresholds i / n, compared strictly: the paper's schedule, bit for bit.
            thresholds = torch.arange(n, dtype=torch.float32, device=device) / n

            # 3. Draw 1 (VAE sample), then draw 2 (the shared noise); O_0 starts the loop.
            original = self.encode_image(pixels, batch_size, generator).to(prompt_embeds.dtype)
            noise = randn_tensor(original.shape, generator=generator, device=device, dtype=original.dtype)
            latents = self.scheduler.add_noise(original, noise, timesteps[:1].repeat(batch_size))

            # 4. Windows over the latent width and the text batch that matches their layout.
            window, overlap = self._latent_window(window_width, window_overlap, width)
            windows, weights = window_layout(latent_size[1], window, overlap, loop)
            per_call = windows_per_batch or len(windows)
            groups = [windows[k : k + per_call] for k in range(0, len(windows), per_call)]
            embeds = {len(g): self._window_embeds(prompt_embeds, negative_prompt_embeds, len(g)) for g in groups}
            extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

            self._num_timesteps = n
            with self.progress_bar(total=n) as progress_bar:
                for i, t in enumerate(timesteps):
                    if self.interrupt:
                        continue
                    if i > 0:
                        # O_i is computed here, not up front: sigma schedulers (Euler, DPM) index their
                        # noise level by the current step, which add_noise reads from the scheduler.
                        keep = mask > thresholds[i]
                        noised = self.scheduler.add_noise(original, noise, t.repeat(batch_size))
                        latents = torch.where(keep, noised, latents)
                    noise_pred = self._guided_noise(latents, t, embeds, groups, weights)
                    latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                    if callback_on_step_end is not None:
                        tensors = {
                            "latents": latents,
                            "prompt_embeds": prompt_embeds,
                            "negative_prompt_embeds": negative_prompt_embeds,
                        }
                        outputs = callback_on_step_end(
                            self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                        )
                        latents = outputs.pop("latents", latents)
                    progress_bar.update()

            # 5. Decode.
            if output_type == "latent":
                images = latents
            else:
                decoded = self.vae.decode(
                    latents.to(self.vae.dtype) / self.vae.config.scaling_factor, return_dict=False, generator=generator
                )[0]
                images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, None)
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None)

    def _latent_window(self, window_width: int | None, overlap: int, width: int) -> tuple[int, int]:
        """(window, overlap) in latent pixels; the whole width when no window is asked for."""
        if window_width is None:
            return width // self.vae_scale_factor, 0
        if window_width % self.vae_scale_factor or overlap % self.vae_scale_factor:
            raise ValueError(f"window width and overlap must be multiples of {self.vae_scale_factor}")
        return window_width // self.vae_scale_factor, overlap // self.vae_scale_factor

    def _window_embeds(self, positive: torch.Tensor, negative: torch.Tensor | None, count: int) -> torch.Tensor:
        """Text embeddings laid out like the UNet batch: [uncond windows..., cond windows...]."""
        if not self.do_classifier_free_guidance:
            return positive.repeat(count, 1, 1)
        return torch.cat([negative.repeat(count, 1, 1), positive.repeat(count, 1, 1)])
