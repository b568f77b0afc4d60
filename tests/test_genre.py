"""Genre accuracy by diffusion classification: a planted case with a known answer, and the command."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import test_train_support as support
import torch

from riffmask.cli import main
from riffmask.metrics import genre

prepared_dir = support.prepared_dir  # the shared session fixture
GENRES = ["ambient", "chiptune", "synthpop"]


class PlantedUNet(torch.nn.Module):
    """Predicts the noise as if the clean latent were its prompt's planted mean (plus a small error
    that depends on the noisy input, so that the noise draw matters).

    The prompt is recognised by its text embedding, so a clip of genre g is denoised best under g's
    prompt: the classifier must answer g.
    """

    def __init__(self, embeddings: torch.Tensor, means: torch.Tensor, scheduler):
        super().__init__()
        self.embeddings, self.means, self.scheduler = embeddings, means, scheduler
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device and dtype

    @property
    def device(self):
        return self.anchor.device

    @property
    def dtype(self):
        return self.anchor.dtype

    def forward(self, noisy, timesteps, states):
        which = torch.cdist(states.flatten(1), self.embeddings.flatten(1)).argmin(dim=1)
        alpha = self.scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        eps = (noisy - alpha.sqrt() * self.means[which]) / (1 - alpha).sqrt()
        return SimpleNamespace(sample=eps + 0.1 * noisy)


def _planted_case(seed: int = 0):
    from diffusers import DDPMScheduler

    from riffmask.infer.tiny import RIFFUSION_SCHEDULER_CONFIG, build_tiny_components

    parts = build_tiny_components(0)
    scheduler = DDPMScheduler.from_config(RIFFUSION_SCHEDULER_CONFIG)
    prompts = {g: f"a {g} song" for g in GENRES}
    embeddings = genre.encode_prompts(parts["text_encoder"], parts["tokenizer"], list(prompts.values()))
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn((len(GENRES), 4, 4, 4), generator=generator)
    labels = [GENRES[i % 3] for i in range(9)]
    latents = torch.stack([means[GENRES.index(g)] for g in labels])
    latents = latents + 0.3 * torch.randn(latents.shape, generator=generator)
    model = genre.GenreModel(PlantedUNet(embeddings, means, scheduler), parts["text_encoder"], parts["tokenizer"],
                             parts["vae"], scheduler)
    return model, latents, labels, prompts


def test_planted_prompt_dependence_is_recovered():
    model, latents, labels, prompts = _planted_case()
    result = genre.classify(model, latents, labels, prompts, num_pairs=8, seed=0)
    assert result.accuracy == 1.0
    assert result.confusion.tolist() == [[3, 0, 0], [0, 3, 0], [0, 0, 3]]
    assert [r["recall"] for r in result.per_genre()] == [1.0, 1.0, 1.0]
    # the per-genre loss is the error under the genre's own prompt, the smallest of each row
    own = result.errors[np.arange(9), result.true]
    assert np.allclose(own, result.errors.min(axis=1))
    summary = result.summary()
    assert summary["accuracy"] == 1.0 and summary["chance"] == pytest.approx(1 / 3)
    assert summary["prompts"] == ["a ambient song", "a chiptune song", "a synthpop song"]


def test_seeded_pairs_repeat_and_differ_by_seed():
    model, latents, labels, prompts = _planted_case()
    a = genre.classify(model, latents, labels, prompts, num_pairs=4, seed=7).errors
    b = genre.classify(model, latents, labels, prompts, num_pairs=4, seed=7).errors
    c = genre.classify(model, latents, labels, prompts, num_pairs=4, seed=8).errors
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_pairs_are_stratified_over_the_schedule():
    timesteps, noise = genre.noise_pairs(4, (4, 2, 2), 1000, seed=0)
    assert timesteps.tolist() == [125, 375, 625, 875]
    assert noise.shape == (4, 4, 2, 2)


def test_prompts_follow_the_training_captions():
    rows = [{"genre": "lofi_hip-hop", "caption": "lofi hip hop"}, {"genre": "jazz", "caption": "jazz"},
            {"genre": "jazz", "caption": "jazz take two"}]
    assert genre.genre_prompts(rows, ["jazz", "lofi_hip-hop"]) == {"jazz": "jazz", "lofi_hip-hop": "lofi hip hop"}
    assert genre.genre_prompts(rows, ["jazz"], "a sks {genre} song") == {"jazz": "a sks jazz song"}
    assert genre.prompts_from_list(["x", "y"], ["jazz", "rock"]) == {"jazz": "x", "rock": "y"}
    assert genre.prompts_from_list(["rock=r", "jazz=j"], ["jazz", "rock"]) == {"jazz": "j", "rock": "r"}
    with pytest.raises(Exception, match="one prompt per genre"):
        genre.prompts_from_list(["x"], ["jazz", "rock"])


def test_eval_genre_command_writes_every_output(tmp_path, tiny_model_dir, prepared_dir, capsys):
    args = ["eval", "genre", str(prepared_dir), "--model", str(tiny_model_dir), "--pairs", "4",
            "--json", str(tmp_path / "g.json"), "--csv", str(tmp_path / "g.csv"),
            "--confusion", str(tmp_path / "c.png"), "--report", str(tmp_path / "r.html")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "true \\ predicted" in printed
    result = json.loads((tmp_path / "g.json").read_text())
    assert 0.0 <= result["accuracy"] <= 1.0 and set(result["summary"]["genres"]) <= set(GENRES)
    assert sum(map(sum, result["summary"]["confusion"])) == len(result["items"]) == result["summary"]["clips"]
    assert (tmp_path / "g.csv").read_text().startswith("name,genre,predicted,correct,error_ambient")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "Genre accuracy" in (tmp_path / "r.html").read_text()
    # deterministic: the same command gives the same numbers
    assert main(args) == 0
    assert json.loads((tmp_path / "g.json").read_text()) == result


def test_eval_genre_bad_inputs_are_one_line_errors(tmp_path, tiny_model_dir, prepared_dir, capsys):
    no_text = tmp_path / "no_text"
    shutil.copytree(tiny_model_dir, no_text)
    shutil.rmtree(no_text / "text_encoder")
    assert main(["eval", "genre", str(prepared_dir), "--model", str(no_text)]) == 2
    assert "no text_encoder" in capsys.readouterr().err

    assert main(["eval", "genre", str(prepared_dir), "--model", str(tiny_model_dir), "--split", "test"]) == 2
    assert "split: 'test' is not one of train, validation" in capsys.readouterr().err

    one_genre = _one_genre_dataset(tmp_path)
    assert main(["eval", "genre", str(one_genre), "--model", str(tiny_model_dir), "--split", "train"]) == 2
    assert "at least two genres" in capsys.readouterr().err

    assert main(["eval", "genre", str(tmp_path), "--model", str(tiny_model_dir)]) == 2
    assert "not a dataset written by `riffmask prep`" in capsys.readouterr().err


def _one_genre_dataset(tmp_path):
    from riffmask.core.params import SpectrogramOptions
    from riffmask.data_prep.config import PrepConfig
    from riffmask.data_prep.dataset import prepare_dataset
    from riffmask.data_prep.synth import write_builtin_genres

    write_builtin_genres(tmp_path / "genres", seconds=0.7, files_per_genre=1, genres=("ambient",))
    cfg = PrepConfig(width=support.RES, spectrogram=SpectrogramOptions(num_frequencies=support.RES),
                     validation_fraction=0.0)
    prepare_dataset(tmp_path / "genres", tmp_path / "prep", cfg, progress=False)
    return tmp_path / "prep"
