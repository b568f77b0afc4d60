"""The studio's live mask preview on this CPU: the server-side update of a 512x512 mask (target:
50 ms), and beside it the same update as a script sees it, a ``/mask`` round trip through the running
app with gradio_client (upload of the spectrogram PNG, queue, PNG of the mask back), and the overlay
and step images the page draws after each mask.

The spectrograms are the first 5.11 s (one 512-px window) of the six real everyday sounds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench.common import best_of, real_sounds, write_result
from riffmask.app.studio import Studio
from riffmask.app.ui import build_app, launch
from riffmask.common.config import build_config
from riffmask.core.audio import load_audio
from riffmask.core.codec import audio_to_image, save_image
from riffmask.core.params import PAPER_CLIP_SAMPLES
from riffmask.infer.config import GenerateConfig

TARGET_MS = 50.0
PAPER = {"invert": 1.0, "brightness": 0.05, "contrast": 200.0, "downshift": 40}


def main() -> None:
    from gradio_client import Client, handle_file

    images = [audio_to_image(load_audio(p)[:PAPER_CLIP_SAMPLES]) for p in real_sounds()]
    assert all(im.size == (512, 512) for im in images)
    with tempfile.TemporaryDirectory() as tmp:
        studio = Studio(build_config(GenerateConfig, ("bench", {"out": f"{tmp}/takes"})))
        server = [best_of(lambda im=im: studio.mask(im, **PAPER), 7)[0] for im in images]
        views = [best_of(lambda im=im: studio.mask_views(im, **PAPER), 3)[0] for im in images]
        pngs = []
        for k, im in enumerate(images):
            pngs.append(Path(tmp) / f"{k}.png")
            save_image(im, pngs[-1])
        app = build_app(studio)
        launch(app, studio, block=False)
        try:
            client = Client(app.local_url, verbose=False)
            call = lambda png: client.predict(image=handle_file(str(png)), **PAPER, api_name="/mask")  # noqa: E731
            call(pngs[0])  # first call: connections, caches
            round_trip = [best_of(lambda png=png: call(png), 5)[0] for png in pngs]
        finally:
            app.close()
    result = {
        "what": "512x512 mask update: server side (Studio.mask = infer.mask.make_mask) and the /mask round trip",
        "images": len(images),
        "target_ms": TARGET_MS,
        "server_mask_ms": round(1000 * float(np.mean(server)), 2),
        "server_mask_worst_ms": round(1000 * float(np.max(server)), 2),
        "server_ratio_to_target": round(1000 * float(np.max(server)) / TARGET_MS, 3),
        "overlay_and_steps_ms": round(1000 * float(np.mean(views)), 2),
        "round_trip_ms": round(1000 * float(np.mean(round_trip)), 1),
        "round_trip_worst_ms": round(1000 * float(np.max(round_trip)), 1),
    }
    print(result, flush=True)
    write_result("app", result)


if __name__ == "__main__":
    main()
