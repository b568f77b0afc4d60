"""The denoising loss: epsilon or v-prediction target, min-SNR weighting, one value per sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def training_target(noise_scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                    prediction_type: str) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon) or the velocity (v-prediction)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def snr(noise_scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_t^2 / sigma_t^2 of each timestep."""
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1.0 - alphas_cumprod)


def per_sample_loss(model_pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, noise_scheduler,
                    prediction_type: str, snr_gamma: float | None) -> torch.Tensor:
    """Mean squared error per sample (B,), weighted by min(SNR, gamma) / SNR when ``snr_gamma`` is set.

    The weight follows Hang et al. 2023 (min-SNR): for v-prediction the denominator is SNR + 1, because
    the v target already carries a factor of the SNR.
    """
    loss = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma is None:
        return loss
    ratio = snr(noise_scheduler, timesteps)
    clipped = torch.minimum(ratio, torch.full_like(ratio, snr_gamma))
    denominator = ratio + 1 if prediction_type == "v_prediction" else ratio
    return loss * clipped / denominator
