"""riffmask prep: genre folders -> dataset, on small images (64 px wide, 64 mel bands, 0.63 s clips)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
from conftest import SR, killed_when_stalled, tone

from riffmask.common.config import ConfigError, load_config
from riffmask.common.errors import RiffmaskError
from riffmask.core.codec import load_image, stored_max_volume
from riffmask.data_prep import synth
from riffmask.data_prep.clips import clip_starts, cut_clips
from riffmask.data_prep.config import PrepConfig
from riffmask.data_prep.dataset import prepare_dataset, summary_lines
from riffmask.data_prep.readers import dataset_fingerprint, load_prepared

SMALL = ["width=64", "num_frequencies=64", "validation_fraction=0.5", "png_compress_level=1"]
CLIP = 63 * 441  # samples of a 64 px clip
FILE_SECONDS = 1.6  # two full clips and a 0.34 s tail (kept: over half a clip)


def small_config(*extra: str) -> PrepConfig:
    return load_config(PrepConfig, "paper", SMALL + list(extra))


def make_genres(root: Path, files: int = 2) -> Path:
    synth.write_builtin_genres(root, seconds=FILE_SECONDS, files_per_genre=files, genres=("synthpop", "ambient"))
    return root


def prep(root: Path, out: Path, *extra: str, **kwargs):
    return prepare_dataset(root, out, small_config(*extra), progress=False, **kwargs)


def clip_files(out: Path) -> list[str]:
    """Every file in the split folders except the Arrow/datasets ones, sorted."""
    return sorted(
        f"{p.parent.name}/{p.name}"
        for split in ("train", "validation")
        if (out / split).is_dir()
        for p in (out / split).iterdir()
        if p.suffix in (".png", ".wav") or p.name.startswith(".")
    )


@pytest.fixture(scope="module")
def genres(tmp_path_factory) -> Path:
    return make_genres(tmp_path_factory.mktemp("genres"))


@pytest.fixture(scope="module")
def reference(genres, tmp_path_factory):
    """The dataset of ``genres`` made in one clean run."""
    out = tmp_path_factory.mktemp("reference") / "ds"
    return prep(genres, out)


# --------------------------------------------------------------------------- cutting
def test_clip_starts_hop_overlap_and_tail():
    assert clip_starts(100, 40, 40, 20) == [0, 40, 80]  # a 20-sample tail (80..100) is kept
    assert clip_starts(95, 40, 40, 20) == [0, 40]  # a 15-sample tail is not
    assert clip_starts(100, 40, 30, 20) == [0, 30, 60]  # overlap: 60..100 ends exactly at the end
    assert clip_starts(10, 40, 40, 5) == [0]  # one padded clip
    assert clip_starts(3, 40, 40, 5) == []
    clips = cut_clips(np.ones(100, np.float32), 40, 40, 20)
    assert [c.padded for c in clips] == [False, False, True] and clips[-1].length == 20
    assert np.all(clips[-1].audio[20:] == 0) and len(clips[-1].audio) == 40


def test_hop_and_overlap_options():
    cfg = small_config("overlap_seconds=0.21")
    assert cfg.clip_samples == CLIP and cfg.hop_samples == CLIP - round(0.21 * SR)
    assert small_config("hop_seconds=0.1").hop_samples == 4410
    with pytest.raises(ConfigError, match="not both"):
        small_config("hop_seconds=0.1", "overlap_seconds=0.1")
    with pytest.raises(ConfigError, match="caption_template"):
        small_config("caption_template={artist}")


# --------------------------------------------------------------------------- end to end
def test_dataset_content_and_both_loaders(genres, reference):
    out = reference.out_dir
    report = json.loads((out / "report.json").read_text())
    assert report["files_read"] == 4 and report["clips_written"] == 12 and report["rejected"] == []
    assert report["clips_per_genre"] == {"ambient": 6, "synthpop": 6}
    assert report["fingerprint"] == dataset_fingerprint(out)
    assert (out / "config.yaml").read_text().startswith("width: 64\n")

    ds = load_prepared(out)
    assert set(ds) == {"train", "validation"} and len(ds["train"]) + len(ds["validation"]) == 12
    assert list(ds["train"].features) == ["image", "caption", "genre", "source", "offset", "max_volume", "audio", "id"]
    rows = [row for split in ds.values() for row in split]
    assert len({r["id"] for r in rows}) == 12
    row = next(r for r in rows if r["source"] == "synthpop/synthpop_1.wav" and r["offset"] > 0.6)
    assert row["offset"] == pytest.approx(CLIP / SR, abs=1e-4) and row["genre"] == row["caption"] == "synthpop"
    assert row["image"].size == (64, 64)
    assert stored_max_volume(row["image"]) == pytest.approx(row["max_volume"])  # EXIF kept in the Arrow bytes
    assert row["max_volume"] == int(row["max_volume"])  # paper mode: ceil
    clip = sf.read(out / row["audio"], dtype="float32")[0]
    source = sf.read(genres / row["source"], dtype="float32")[0]
    np.testing.assert_allclose(clip, source[CLIP : 2 * CLIP], atol=1e-4)
    assert load_image(out / row["audio"].replace(".wav", ".png")).size == (64, 64)

    folder = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(out.parent / "hf-cache"))
    for split in ds:
        assert folder[split]["id"] == ds[split]["id"]
        assert folder[split]["caption"] == ds[split]["caption"]
        assert np.array_equal(np.asarray(folder[split][0]["image"]), np.asarray(ds[split][0]["image"]))


def test_split_is_by_source_file_and_deterministic(genres, reference, tmp_path):
    ds = load_prepared(reference.out_dir)
    sources = {split: set(ds[split]["source"]) for split in ds}
    assert sources["train"] and sources["validation"] and not sources["train"] & sources["validation"]
    order = [(r["source"], r["offset"]) for r in ds["train"]]
    assert order == sorted(order)
    again = prep(genres, tmp_path / "again")
    assert again.report["fingerprint"] == reference.report["fingerprint"]
    other = prep(genres, tmp_path / "other_seed", "split_seed=3")
    assert {r["source"] for r in load_prepared(other.out_dir)["validation"]} != sources["validation"]


def test_captions_from_template_and_txt_files(tmp_path):
    root = make_genres(tmp_path / "g", files=1)
    (root / "ambient" / "ambient_0.txt").write_text("  slow   ambient pad,\nwarm  \n")
    result = prep(root, tmp_path / "out", "caption_template={genre} music, {stem}")
    captions = {r["source"]: r["caption"] for split in load_prepared(result.out_dir).values() for r in split}
    assert captions == {
        "ambient/ambient_0.wav": "slow ambient pad, warm",
        "synthpop/synthpop_0.wav": "synthpop music, synthpop 0",
    }


def test_rerun_on_finished_output_does_nothing(genres, reference):
    out = reference.out_dir
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    result = prep(genres, out)
    assert result.up_to_date and result.report["fingerprint"] == reference.report["fingerprint"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_new_file_is_added_incrementally_in_parallel(genres, reference, tmp_path):
    root = tmp_path / "g"
    shutil.copytree(genres, root)
    out = tmp_path / "out"
    shutil.copytree(reference.out_dir, out)
    sf.write(root / "ambient" / "new.flac", synth.genre_clip("ambient", 7, FILE_SECONDS), SR)
    result = prep(root, out, "num_proc=2")
    assert result.report["run"]["files_prepared"] == 1 and result.report["clips_written"] == 15
    fresh = prep(root, tmp_path / "fresh", "num_proc=2")  # two workers, the same bytes
    assert result.report["fingerprint"] == fresh.report["fingerprint"]
    assert clip_files(out) == clip_files(fresh.out_dir)
    (root / "synthpop" / "synthpop_0.wav").unlink()  # a removed source leaves the dataset
    changed = root / "ambient" / "ambient_1.wav"
    sf.write(changed, synth.genre_clip("ambient", 1, FILE_SECONDS / 2), SR)  # an edited file is redone
    os.utime(changed, ns=(1, 1))
    result = prep(root, out)
    assert result.report["run"]["files_prepared"] == 1 and result.report["clips_written"] == 10
    assert not any("synthpop_0" in f for f in clip_files(out))
    assert sum("ambient_1" in f for f in clip_files(out)) == 2 * 1


def test_bad_files_are_reported_and_the_good_ones_kept(tmp_path):
    root = tmp_path / "g"
    bad = root / "mixed"
    bad.mkdir(parents=True)
    sf.write(bad / "good.wav", synth.genre_clip("chiptune", 0, FILE_SECONDS), SR)
    (bad / "corrupt.mp3").write_bytes(os.urandom(4000))
    (bad / "empty.wav").write_bytes(b"")
    (bad / "notes.wav").write_text("not audio\n" * 50)
    (bad / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    sf.write(bad / "short.wav", tone(440, 0.1), SR)
    sf.write(bad / "silent.wav", np.zeros(SR, np.float32), SR)
    with_nan = tone(440, 1.0)
    with_nan[500] = np.nan
    sf.write(bad / "nan.wav", with_nan, SR, subtype="FLOAT")
    sf.write(bad / "phone.wav", tone(440, 1.0, sr=8000), 8000)
    quiet_start = np.concatenate([np.zeros(CLIP, np.float32), tone(440, 0.7)])
    sf.write(bad / "quiet_start.wav", quiet_start, SR)
    (root / "loose.wav").write_bytes(b"")

    plan = prep(root, tmp_path / "out", dry_run=True).report  # from headers: all but what needs the samples
    planned = {r["source"].split("/")[-1]: r["reason"] for r in plan["rejected"]}
    assert set(planned) == {"corrupt.mp3", "empty.wav", "notes.wav", "short.wav", "phone.wav"}
    result = prep(root, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rejected = {r["source"].split("/")[-1]: r["reason"] for r in report["rejected"]}
    assert set(rejected) == {"corrupt.mp3", "empty.wav", "notes.wav", "short.wav", "nan.wav", "phone.wav"}
    assert all(planned[name] == rejected[name] for name in planned)
    assert "empty" in rejected["empty.wav"] and "NaN" in rejected["nan.wav"]
    assert "too short" in rejected["short.wav"] and "min_sample_rate=8000" in rejected["phone.wav"]
    assert {i["file"] for i in report["ignored"]} == {"mixed/cover.jpg", "loose.wav"}
    assert report["dropped"]["by_reason"] == {"near-silent": 3}  # silent.wav twice, quiet_start once
    assert report["files_read"] == 3 and report["clips_written"] == 3 + 1
    ds = load_prepared(result.out_dir)
    kept = sorted(r["source"] for split in ds.values() for r in split)
    assert kept == ["mixed/good.wav"] * 3 + ["mixed/quiet_start.wav"]
    assert prep(root, tmp_path / "out").up_to_date  # rejected files are not read again


def test_dry_run_writes_nothing(genres, tmp_path):
    result = prep(genres, tmp_path / "out", dry_run=True)
    assert result.report["files_to_prepare"][0] == {
        "source": "ambient/ambient_0.wav",
        "seconds": 1.6,
        "sample_rate": SR,
    }
    assert result.report["clips_estimate"] == 12 and not (tmp_path / "out").exists()


def test_an_output_folder_keeps_its_settings(genres, reference, tmp_path):
    with pytest.raises(ConfigError, match="width: 64 -> 32"):
        prep(genres, reference.out_dir, "width=32")
    for reader in (load_prepared, dataset_fingerprint):
        with pytest.raises(RiffmaskError, match="not a dataset written by `riffmask prep`"):
            reader(tmp_path)
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(RiffmaskError, match="not empty"):
        prep(genres, tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_missing_clip_files_are_made_again(genres, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference.out_dir, out)
    png, wav = sorted((out / "train").glob("ambient-*.png"))[0], sorted((out / "train").glob("synthpop-*.wav"))[0]
    png.unlink()
    wav.unlink()
    result = prep(genres, out)  # the two sources whose clips went missing are prepared again, nothing else
    assert result.report["run"]["files_prepared"] == 2 and png.is_file() and wav.is_file()
    assert result.report["fingerprint"] == reference.report["fingerprint"]
    assert clip_files(out) == clip_files(reference.out_dir)


def test_min_sample_rate_may_change_and_decides_only_which_files_are_used(tmp_path):
    root = make_genres(tmp_path / "g", files=1)
    sf.write(root / "ambient" / "phone.wav", tone(440, 1.0, sr=8000), 8000)
    first = prep(root, tmp_path / "out").report
    assert "add min_sample_rate=8000" in first["rejected"][0]["reason"] and first["files_read"] == 2
    lowered = prep(root, tmp_path / "out", "min_sample_rate=8000").report  # the advice works in the same folder
    assert lowered["run"]["files_prepared"] == 1 and lowered["files_read"] == 3 and not lowered["rejected"]
    assert lowered["fingerprint"] == prep(root, tmp_path / "fresh", "min_sample_rate=8000").report["fingerprint"]
    raised = prep(root, tmp_path / "out").report  # back to the default: the phone file leaves again
    assert raised["run"]["files_prepared"] == 1 and raised["rejected"] == first["rejected"]
    assert raised["fingerprint"] == first["fingerprint"]
    assert not any("phone" in f for f in clip_files(tmp_path / "out"))


def test_folder_links_are_followed_and_a_loop_is_listed(tmp_path):
    root, elsewhere = tmp_path / "g", tmp_path / "elsewhere"
    for folder in (root / "jazz", elsewhere / "rock" / "takes", elsewhere / "live"):
        folder.mkdir(parents=True)
    for k, name in enumerate(("g/jazz/a", "elsewhere/rock/b", "elsewhere/rock/takes/c", "elsewhere/live/d")):
        sf.write(tmp_path / f"{name}.wav", tone(300 + 200 * k, 0.7), SR)
    (root / "rock").symlink_to(elsewhere / "rock")  # a genre folder that is a link
    (root / "jazz" / "live").symlink_to(elsewhere / "live")  # a sub-folder that is a link
    (elsewhere / "rock" / "takes" / "again").symlink_to(elsewhere / "rock")  # a loop: rock/takes/again -> rock
    report = prep(root, tmp_path / "out", "validation_fraction=0").report
    assert sorted(r["source"] for r in load_prepared(tmp_path / "out")["train"]) == [
        "jazz/a.wav", "jazz/live/d.wav", "rock/b.wav", "rock/takes/c.wav"
    ]
    assert [i["file"] for i in report["ignored"]] == ["rock/takes/again"]
    assert "a loop" in report["ignored"][0]["reason"]


def test_unreadable_entries_and_empty_genres_are_reported_and_a_rerun_is_up_to_date(tmp_path):
    root = make_genres(tmp_path / "g", files=1)
    (root / "ambient" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    (root / "polka").mkdir()
    (root / "polka" / "notes.md").write_text("to record")
    plan = prep(root, tmp_path / "out", dry_run=True)
    assert any("genre folder polka/ holds no audio files" in line for line in summary_lines(plan))
    first = prep(root, tmp_path / "out").report
    assert {"source": "ambient/gone.wav", "reason": "a dangling symbolic link"} in first["rejected"]
    assert any("polka/" in w for w in first["warnings"])
    out = tmp_path / "out"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = prep(root, out)
    assert again.up_to_date and again.report == first  # still listed, nothing rebuilt
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    (root / "ambient" / "cover.jpg").write_bytes(b"\xff\xd8\xff")  # a new finding: the report is rewritten
    third = prep(root, out)
    assert not third.up_to_date and third.report["run"]["files_prepared"] == 0
    assert "ambient/cover.jpg" in {i["file"] for i in third.report["ignored"]}


# --------------------------------------------------------------------------- crash safety
# `riffmask prep` whose clip writer announces the clip number STALL_AFTER and then hangs, so that the
# test can kill -9 it at a known point (pool workers are forked, so they inherit the patch).
STALLING_PREP = """
import os, signal, sys, time
import riffmask.cli as c
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as on a terminal, also under a background job
from riffmask.data_prep import source_file
written, write_wav = 0, source_file.write_wav
def stalling(*args, **kwargs):
    global written
    write_wav(*args, **kwargs)
    written += 1
    if written >= int(os.environ["STALL_AFTER"]):
        print(f"prep: stalled after {written} clips", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)
source_file.write_wav = stalling
sys.exit(c.main(sys.argv[1:]))
"""


def stalling_prep(genres: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", STALLING_PREP, "prep", str(genres), str(out), "--config", "paper", *SMALL, *extra]


def test_kill_9_mid_file_then_rerun_finishes_without_duplicates(genres, reference, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "STALL_AFTER": "4"}  # file 1 has 3 clips: stall after clip 0 of file 2
    # One worker: the stall counts the clips of one process (the default is one worker per core).
    cmd = stalling_prep(genres, out, "num_proc=1")
    with killed_when_stalled(cmd, "stalled after 4 clips", env=env, cwd=Path(__file__).parent.parent):
        pass  # killed -9 once stalled
    assert not (out / "dataset_dict.json").exists() and len(clip_files(out)) == 2 * 4
    assert len(list((out / ".riffmask" / "sources").iterdir())) == 1
    (out / "train" / ".ambient-x.png.ab12cd.png").write_bytes(b"\x89PNG half")  # a write cut short

    result = prep(genres, out)
    assert result.report["run"]["files_prepared"] == 3
    assert result.report["fingerprint"] == reference.report["fingerprint"]
    assert clip_files(out) == clip_files(reference.out_dir)  # no duplicates, no temporary files
    assert prep(genres, out).up_to_date


@pytest.mark.timeout(120)
def test_a_second_run_refuses_and_ctrl_c_stops_the_first_keeping_finished_files(genres, reference, tmp_path):
    out = tmp_path / "out"
    # Each worker finishes at most one 3-clip file and stalls in its next: two files done at most, two in flight.
    env = {**os.environ, "STALL_AFTER": "4"}
    cmd = stalling_prep(genres, out, "num_proc=2")
    # Its own process group, as a terminal's job: Ctrl-C reaches the main process and the workers alike.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parent.parent,
                            start_new_session=True)  # fmt: skip
    try:
        stalled = 0
        for line in proc.stderr:  # until both workers stall: the folder stays as it is now
            stalled += line.count("stalled after 4 clips")  # unbuffered stderr may put both on one line
            if stalled == 2:
                break
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        with pytest.raises(RiffmaskError, match=f"another riffmask prep is writing to {out}"):
            prep(genres, out)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=10)[1]  # the stalled workers are stopped, not waited for
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 130 and "run the same command again to continue" in err
    kept = len(list((out / ".riffmask" / "sources").iterdir()))
    assert kept >= 1 and not (out / "dataset_dict.json").exists()
    result = prep(genres, out)
    assert result.report["run"]["files_prepared"] == 4 - kept
    assert result.report["fingerprint"] == reference.report["fingerprint"]
    assert clip_files(out) == clip_files(reference.out_dir)


@pytest.mark.timeout(180)
def test_a_worker_that_dies_costs_only_the_files_in_flight(tmp_path, monkeypatch):
    """A worker killed mid-file (out of memory, a decoder crash) must not hang the run or lose finished
    files; the rerun prepares what is missing."""
    from riffmask.data_prep import source_file

    root = make_genres(tmp_path / "g", files=3)
    doomed = sorted(root.rglob("*.wav"))[-1]
    prepare = source_file.prepare_source

    def dies_on_one_file(source, cfg, out_dir):
        if source.path == doomed:
            os._exit(9)  # no exception, no manifest: the process is simply gone
        return prepare(source, cfg, out_dir)

    monkeypatch.setattr(source_file, "prepare_source", dies_on_one_file)  # the forked workers inherit it
    report = prep(root, tmp_path / "out", "num_proc=2").report
    failed = {r["source"] for r in report["rejected"]}
    assert str(doomed.relative_to(root)) in failed and all("worker process died" in r["reason"]
                                                           for r in report["rejected"])
    assert report["files_read"] + len(failed) == 6 and report["files_read"] >= 1
    monkeypatch.setattr(source_file, "prepare_source", prepare)
    again = prep(root, tmp_path / "out", "num_proc=2").report
    assert again["run"]["files_prepared"] == len(failed) and again["files_read"] == 6 and not again["rejected"]
    assert again["fingerprint"] == prep(root, tmp_path / "fresh").report["fingerprint"]


def test_empty_splits_still_load(tmp_path):
    root = make_genres(tmp_path / "g", files=1)
    result = prep(root, tmp_path / "out", "validation_fraction=0")
    assert result.report["clips_per_split"] == {"train": 6, "validation": 0} and result.report["warnings"]
    ds = load_prepared(result.out_dir)
    assert (len(ds["train"]), len(ds["validation"])) == (6, 0)
    assert list(ds["validation"].features) == list(ds["train"].features)
    (tmp_path / "quiet" / "room").mkdir(parents=True)
    sf.write(tmp_path / "quiet" / "room" / "hum.wav", np.zeros(SR, np.float32), SR)
    result = prep(tmp_path / "quiet", tmp_path / "out2")
    assert result.report["clips_written"] == 0 and "no clips" in result.report["warnings"][0]
    assert [len(split) for split in load_prepared(result.out_dir).values()] == [0, 0]


# --------------------------------------------------------------------------- built-in material
def test_builtin_material_is_deterministic_and_varied(tmp_path):
    a = synth.genre_clip("synthpop", 0, 1.0)
    assert np.array_equal(a, synth.genre_clip("synthpop", 0, 1.0)) and len(a) == SR
    assert not np.allclose(a, synth.genre_clip("synthpop", 1, 1.0))  # another key and tempo
    assert not np.allclose(a, synth.genre_clip("synthpop", 0, 1.0, seed=1))
    assert 0.5 < np.max(np.abs(a)) <= 0.8
    written = synth.write_builtin_genres(tmp_path / "g", seconds=0.5, files_per_genre=2)
    assert sorted(p.relative_to(tmp_path / "g").as_posix() for p in written) == sorted(
        f"{g}/{g}_{k}.wav" for g in synth.GENRES for k in range(2)
    )
    sound = synth.write_builtin_sound(tmp_path / "s" / "kettle.wav", seconds=2.0)
    audio, rate = sf.read(sound, dtype="float32")
    assert rate == SR and len(audio) == 2 * SR and np.isfinite(audio).all()
    # the whistle rises out of the noise: the last half-second is louder than the first
    assert np.sqrt(np.mean(audio[-SR // 2 :] ** 2)) > 2 * np.sqrt(np.mean(audio[: SR // 2] ** 2))
    with pytest.raises(ValueError, match="unknown built-in genre"):
        synth.genre_clip("polka", 0, 1.0)
