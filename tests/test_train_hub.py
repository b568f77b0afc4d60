"""Publishing to a Hub: a local HTTP server stands in for huggingface.co (the machines are offline)."""

from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import test_train_support as support
from test_train_support import RES, overrides, run_train

from riffmask.cli import main as riffmask_main
from riffmask.common.config import build_config, save_config
from riffmask.common.errors import RiffmaskError
from riffmask.train.config import TrainConfig

TOKEN = "hf_testtoken_never_written_0123456789"
prepared_dir = support.prepared_dir  # the shared session fixture


class FakeHub(BaseHTTPRequestHandler):
    """Just enough of the Hub API for ``create_repo`` and ``upload_folder`` (regular, non-LFS files)."""

    repos: dict[str, dict[str, bytes]] = {}
    auth: list[str] = []
    unknown: list[str] = []

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.auth.append(self.headers.get("Authorization", ""))
        host = f"http://{self.headers['Host']}"
        if self.path == "/api/repos/create":
            request = json.loads(body)
            repo_id = f"{request.get('organization') or 'me'}/{request['name']}"
            self.repos.setdefault(repo_id, {})
            return self._reply(200, {"url": f"{host}/{repo_id}", "name": repo_id, "id": repo_id})
        if self.path == "/api/validate-yaml":  # the client checks a README's metadata before committing
            return self._reply(200, {"errors": [], "warnings": []})
        parts = self.path.split("/")  # /api/models/{owner}/{name}/{preupload|commit}/{revision}
        if len(parts) == 7 and parts[1:3] == ["api", "models"] and parts[5] in ("preupload", "commit"):
            repo_id = f"{parts[3]}/{parts[4]}"
            if parts[5] == "preupload":
                files = json.loads(body)["files"]
                return self._reply(200, {"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.repos[repo_id][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return self._reply(200, {"commitUrl": f"{host}/{repo_id}/commit/{'a' * 40}", "commitOid": "a" * 40})
        self.unknown.append(f"POST {self.path}")
        return self._reply(404, {"error": "not implemented by the test hub"})

    def do_GET(self):  # noqa: N802
        self.unknown.append(f"GET {self.path}")
        self._reply(404, {"error": "not implemented by the test hub"})

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch):
    FakeHub.repos, FakeHub.auth, FakeHub.unknown = {}, [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield FakeHub
    server.shutdown()


def _training_output(folder, dataset):
    """A finished LoRA run's folder as `riffmask train` leaves it (weights stand in as small files)."""
    dataset.mkdir()
    (dataset / "dataset_dict.json").write_text("{}")
    (dataset / "report.json").write_text(json.dumps({"clips_written": 12, "seconds_read": 60.0,
                                                     "clips_per_genre": {"ambient": 12}}))
    cfg = build_config(TrainConfig, ("test", {"dataset": str(dataset), "mode": "lora", "rank": 8}))
    folder.mkdir()
    save_config(cfg, folder / "training_config.yaml")
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"weights")
    (folder / "lora_kohya.safetensors").write_bytes(b"kohya")
    (folder / "dataset_fingerprint.json").write_text('{"fingerprint": "abc123"}')
    (folder / "validation" / "step-10").mkdir(parents=True)
    (folder / "validation" / "step-10" / "kettle.png").write_bytes(b"png")
    (folder / "validation" / "step-10" / "kettle.wav").write_bytes(b"wav")
    (folder / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-10" / "optimizer.bin").write_bytes(b"local only")
    return folder


def test_publish_uploads_outputs_and_card_with_the_token_written_nowhere(tmp_path, hub, capsys):
    out = _training_output(tmp_path / "run", tmp_path / "prep")
    assert riffmask_main(["publish", str(out), "me/riff-lora"]) == 0
    assert capsys.readouterr().out.strip().endswith("/me/riff-lora")
    files = hub.repos["me/riff-lora"]
    assert {"README.md", "pytorch_lora_weights.safetensors", "lora_kohya.safetensors", "training_config.yaml",
            "validation/step-10/kettle.wav", "validation/step-10/kettle.png"} <= set(files)
    assert not any(name.startswith("checkpoints/") for name in files)  # resumable state stays local
    card = files["README.md"].decode()
    for expected in ("base_model: riffusion/riffusion-model-v1", "lora", "12 spectrogram clips", "abc123",
                     "| `rank` | `8` |", "riffmask generate", "validation/step-10/kettle.wav"):
        assert expected in card
    assert all(header == f"Bearer {TOKEN}" for header in hub.auth) and hub.auth
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert not any(TOKEN.encode() in content for content in files.values())


def test_publish_failure_is_one_clear_error(tmp_path, hub, capsys, monkeypatch):
    out = _training_output(tmp_path / "run", tmp_path / "prep")
    assert riffmask_main(["publish", str(out), "me/bad/name"]) == 2
    assert "riffmask publish: error" in capsys.readouterr().err
    assert riffmask_main(["publish", str(tmp_path / "prep"), "me/x"]) == 2
    assert "not a riffmask training output" in capsys.readouterr().err
    with socket.socket() as closed:  # a port nobody listens on: the Hub is unreachable
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
    assert riffmask_main(["publish", str(out), "me/x"]) == 2
    assert "publishing to me/x failed" in capsys.readouterr().err


def test_a_lora_hub_id_that_cannot_be_fetched_is_one_clear_error(tmp_path, monkeypatch, tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    from riffmask.infer.load import load_lora

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
    with pytest.raises(RiffmaskError, match="me/riff-lora: cannot load LoRA .*needs the network"):
        pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), safety_checker=None)
        load_lora(pipe, "me/riff-lora", "lora_0", allow_pickle=False)


def test_a_run_validates_to_wandb_offline_and_pushes_to_the_hub(tmp_path, hub, monkeypatch, tiny_model_dir,
                                                               prepared_dir):
    import soundfile as sf

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = run_train(**overrides(
        prepared_dir, tiny_model_dir, tmp_path / "run", max_train_steps=2, validation_steps=1,
        **{"validation.sampling.steps": 2, "validation.decode.iterations": 2}, report_to="wandb",
        push_to_hub=True, hub_model_id="me/riff-full",
    ))
    for step in (1, 2):
        image = out / "validation" / f"step-{step}" / "kettle.png"
        audio, rate = sf.read(out / "validation" / f"step-{step}" / "kettle.wav")
        assert image.is_file() and rate == 44100 and len(audio) == (RES - 1) * 441
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert all(r["val_loss"] > 0 for r in log)  # held-out loss on prep's validation split
    media = {p.suffix for p in (out / "wandb").rglob("*") if p.is_file() and "media" in p.parts}
    assert {".png", ".wav"} <= media
    files = hub.repos["me/riff-full"]
    assert {"README.md", "model_index.json", "unet/diffusion_pytorch_model.safetensors",
            "validation/step-2/kettle.wav"} <= set(files)
    assert not any(TOKEN.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
