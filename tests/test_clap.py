"""LAION-CLAP embeddings and CLAP score on a tiny random ClapModel saved and loaded offline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from riffmask.cli import main
from riffmask.core.audio import write_wav
from riffmask.metrics.clap import ClapEmbedder, clap_score, fad_windows
from riffmask.metrics.embeddings import embed_files, load_embedder
from riffmask.metrics.tiny import save_tiny_clap

SR = 48000


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    return save_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny-clap")


@pytest.fixture(scope="module")
def embedder(tiny_clap):
    return ClapEmbedder.from_pretrained(tiny_clap)



def noise(seconds, seed, sr=SR):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def test_windows_are_10s_long_every_second_zero_padded():
    audio = np.arange(25, dtype=np.float32)
    windows = fad_windows(audio, window=10, hop=10)
    assert windows.shape == (3, 10) and windows[2, :5].tolist() == list(range(20, 25)) and not windows[2, 5:].any()
    windows = fad_windows(audio, window=10, hop=1)
    assert windows.shape == (25, 10) and windows[24, 0] == 24 and not windows[24, 1:].any()


def test_fad_frames_one_per_second_normalised(embedder):
    assert embedder.sample_rate == SR
    frames = embedder.embed(noise(2.5, 0))
    assert frames.shape == (3, 16)  # windows start at 0, 1 and 2 s
    np.testing.assert_allclose(np.linalg.norm(frames, axis=1), 1.0, rtol=1e-5)


def test_clap_score_is_the_cosine_of_model_embeddings(embedder):
    audio = noise(1.0, 1)
    got = clap_score({"x": embedder.embed_clip(audio)}, embedder.embed_text(["ambient, saxophone"])[0])[0]["clap"]
    # Directly through transformers: repeat-padded 10 s clip, the same 16-bit quantisation.
    quantised = np.round(audio * 32767.0) / 32767.0
    fe, model = embedder.processor.feature_extractor, embedder.model
    feats = fe(
        [quantised.astype(np.float64)],
        sampling_rate=SR,
        truncation="rand_trunc",
        padding="repeatpad",
        return_tensors="pt",
    )
    tokens = embedder.processor.tokenizer(["ambient, saxophone"], return_tensors="pt")
    with torch.inference_mode():
        a = model.get_audio_features(**feats).pooler_output[0]
        t = model.get_text_features(**tokens).pooler_output[0]
    assert got == pytest.approx(float(torch.nn.functional.cosine_similarity(a, t, dim=0)), abs=1e-5)
    assert -1.0 <= got <= 1.0


def test_embed_files_caches_npy_and_reports_bad_files(tmp_path, tiny_clap):
    write_wav(tmp_path / "a.wav", noise(1.0, 2, 44100), 44100)
    (tmp_path / "bad.wav").write_bytes(b"RIFF nonsense")
    model = load_embedder("clap-laion-audio", tiny_clap)
    cache = tmp_path / "emb"
    out, failed = embed_files([tmp_path / "a.wav", tmp_path / "bad.wav"], model, cache)
    assert out["a"].shape == (1, 16) and (cache / "a.npy").is_file()
    assert failed[0]["name"] == "bad" and "bad.wav" in failed[0]["error"]
    again, _ = embed_files([tmp_path / "a.wav"], None, cache)  # cached: no model needed
    np.testing.assert_allclose(again["a"], out["a"], rtol=1e-6)


def test_pickle_weights_need_an_explicit_opt_in(tmp_path, tiny_clap, embedder):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_clap, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(embedder.model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="cannot load CLAP model.*--allow-pickle"):
        ClapEmbedder.from_pretrained(pickled)
    loaded = ClapEmbedder.from_pretrained(pickled, allow_pickle=True)
    torch.testing.assert_close(loaded.model.logit_scale_a, embedder.model.logit_scale_a)
    with pytest.raises(ValueError, match="unknown embedding model"):
        load_embedder("vggish")


def test_eval_clap_and_fad_cli_with_a_local_model(tmp_path, tiny_clap):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    for i in range(2):
        write_wav(gen / f"g{i}.wav", noise(1.2, i, 44100), 44100)
        write_wav(ref / f"r{i}.wav", 0.5 * noise(1.2, 10 + i, 44100), 44100)
    out = tmp_path / "clap.json"
    argv = ["eval", "clap", str(gen), "--prompt", "ambient", "--clap-model", str(tiny_clap), "--json", str(out)]
    assert main([*argv, "--report", str(tmp_path / "clap.html")]) == 0
    assert (tmp_path / "clap.html").read_text().count('<audio controls preload="metadata" src="data:audio/wav') == 2
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["items"]] == ["g0", "g1"] and data["summary"]["n"] == 2
    assert data["summary"]["clap_mean"] == pytest.approx(np.mean([r["clap"] for r in data["items"]]))
    argv = ["eval", "fad", str(gen), "--reference", str(ref), "--clap-model", str(tiny_clap), "--no-fad-inf"]
    assert main([*argv, "--embeddings", str(tmp_path / "emb"), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["files"] == 2 and summary["frames"] == 4 and summary["fad"] >= 0
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == ["g0.npy", "g1.npy"]
