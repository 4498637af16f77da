"""`avseg predict` and `avseg.Predictor` end to end on videos written in the test."""

from __future__ import annotations

import fractions
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from avseg.cli import main
from avseg.inference.frame_output import OutputRules, box_of, frame_output
from avseg.models.postprocess import merge_masks
from avseg.inference.video import VideoError

pytestmark = pytest.mark.timeout(300)


def _run(args, capsys):
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_outputs(out, source, video_info, *, entries, every=1.0, audio=True):
    report = json.loads((out / "predictions.json").read_text())
    src = video_info(source)
    assert report["video"]["width"] == src["width"] and report["video"]["height"] == src["height"]
    assert report["video"]["frames"] == src["frames"]
    assert [f["time"] for f in report["frames"]] == pytest.approx([k * every for k in range(entries)])
    for frame in report["frames"]:
        mask = Image.open(out / frame["mask"])
        assert mask.size == (src["width"], src["height"])
        assert np.asarray(mask).max() < len(report["model"]["classes"])
    overlay = video_info(out / "overlay.mp4")
    assert (overlay["width"], overlay["height"]) == (src["width"], src["height"])
    assert overlay["frames"] == src["frames"]
    assert overlay["video_end"] == pytest.approx(src["video_end"], abs=0.02)
    assert overlay["duration"] == pytest.approx(src["duration"], abs=0.15)
    assert (overlay["audio"] is not None) == audio
    return report


@pytest.mark.parametrize(
    "fps, size, audio_rate, channels, seconds",
    [(fractions.Fraction(30000, 1001), (96, 64), 44100, 2, 2.0),
     (fractions.Fraction(73, 10), (160, 120), 16000, 1, 1.0)],
    ids=["29.97fps-96x64-44k-stereo-2s", "7.3fps-160x120-16k-mono-1s"],
)
def test_cli_writes_overlay_masks_and_json(tmp_path, capsys, make_video, video_info, cli_model,
                                           fps, size, audio_rate, channels, seconds):
    source = make_video(tmp_path / "clip.mp4", fps=fps, size=size, audio_rate=audio_rate, channels=channels,
                        seconds=seconds)
    code, out, err = _run(["-i", source, "--out", tmp_path / "out", *cli_model], capsys)
    assert code == 0, err
    assert "RANDOM INIT" in err and "MEANINGLESS" in err  # the loud warning
    report = _check_outputs(tmp_path / "out", source, video_info, entries=int(seconds))
    assert report["video"]["audio"] == {"sample_rate": audio_rate, "channels": channels, "codec": "aac"}
    assert report["video"]["fps"] == pytest.approx(float(fps), rel=1e-4)
    assert report["model"]["random_init"] is True and report["silent"] is False
    assert report["model"]["classes"][0] == "background" and len(report["model"]["classes"]) == 9

    code, _, err = _run(["-i", source, "--out", tmp_path / "dense", "--fps", "2", "--no-overlay", "--batch-size", "2",
                         *cli_model], capsys)
    assert code == 0, err
    dense = json.loads((tmp_path / "dense/predictions.json").read_text())
    assert len(dense["frames"]) == 2 * len(report["frames"])
    assert [f["time"] for f in dense["frames"]] == pytest.approx([k / 2 for k in range(int(2 * seconds))])
    assert not (tmp_path / "dense/overlay.mp4").exists()


def test_old_grammar_still_predicts_and_warns(tmp_path, capsys, make_video, cli_model):
    """`avseg predict VIDEO --config CFG --random-init KEY=VALUE --batch N` (the grammar before
    `avseg predict CFG KEY=VALUE -i VIDEO --random-init --batch-size N`) writes the same files."""
    source = make_video(tmp_path / "clip.mp4", seconds=2, size=(64, 48))
    config, *rest = cli_model
    assert rest[-2:] == ["--random-init", "data.image_size=64"]  # the old form: overrides after the flag
    code, _, err = _run([source, "--out", tmp_path / "old", "--no-overlay", "--config", config, "--batch", "2", *rest],
                        capsys)
    assert code == 0, err
    for old in ("videos as positional arguments is deprecated", "--config is deprecated", "--batch is deprecated"):
        assert err.count(old) == 1, err
    code, _, err = _run(["-i", source, "--out", tmp_path / "new", "--no-overlay", "--batch-size", "2", *cli_model],
                        capsys)
    assert code == 0 and "deprecated" not in err, err
    old, new = (json.loads((tmp_path / name / "predictions.json").read_text()) for name in ("old", "new"))
    assert [f["objects"] for f in old["frames"]] == [f["objects"] for f in new["frames"]] and len(new["frames"]) == 2
    for frame in new["frames"]:
        assert (tmp_path / "old" / frame["mask"]).read_bytes() == (tmp_path / "new" / frame["mask"]).read_bytes()


def test_thirty_second_video_streams_one_frame_per_second(tmp_path, capsys, make_video, video_info,
                                                                   cli_model, predictor, monkeypatch):
    source = make_video(tmp_path / "long.mp4", fps=fractions.Fraction(73, 10), size=(64, 48), seconds=30,
                        audio_rate=16000, channels=1)
    code, _, err = _run(["-i", source, "--out", tmp_path / "one", *cli_model], capsys)
    assert code == 0, err
    one = _check_outputs(tmp_path / "one", source, video_info, entries=30)
    assert one["video"]["frames"] == 219 and one["video"]["duration"] == pytest.approx(30.0, abs=1e-3)


    # streaming: the first results come out long before the video is decoded to its end
    import avseg.inference.predictor as module

    decoded = []
    original = module.iter_frames

    def counting(info):
        for frame in original(info):
            decoded.append(frame.index)
            yield frame

    monkeypatch.setattr(module, "iter_frames", counting)
    stream = predictor.stream(source, window=5)
    first = next(stream)
    assert first.time == 0.0 and first.class_map.shape == (48, 64)
    assert len(decoded) < 60  # 5 samples + one frame of look-ahead, not 219 frames
    stream.close()


def test_every_frame_and_variable_frame_rate(tmp_path, predictor, make_video):
    times = [0.0, 0.1, 0.15, 0.9, 1.02, 1.5, 2.2, 2.9, 3.05]
    source = make_video(tmp_path / "vfr.mkv", frame_times=times, seconds=3.2, size=(64, 48))
    report = predictor.predict_video(source, tmp_path / "out")
    assert [(f["time"], f["frame_index"]) for f in report["frames"]] == [(0, 0), (1, 4), (2, 6), (3, 8)]
    assert [f["frame_time"] for f in report["frames"]] == pytest.approx([0.0, 1.02, 2.2, 3.05])
    dense = predictor.predict_video(source, every_frame=True)
    assert [f["frame_index"] for f in dense["frames"]] == list(range(len(times)))
    assert [f["time"] for f in dense["frames"]] == pytest.approx(times)
    assert all(f["mask"] is None for f in dense["frames"])


def test_several_inputs_one_folder_each_and_bad_files_reported(tmp_path, capsys, make_video, cli_model):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = make_video(tmp_path / "a/clip.mp4", seconds=1, size=(64, 48))
    second = make_video(tmp_path / "b/clip.mp4", seconds=1, size=(64, 48), fps=fractions.Fraction(25))
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    code, out, err = _run(["-i", first, "-i", noise, "-i", second, "--out", tmp_path / "out", *cli_model], capsys)
    assert code == 1
    assert f"{noise}: not a readable video" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip", "clip-2"]
    for name in ("clip", "clip-2"):
        report = json.loads((tmp_path / "out" / name / "predictions.json").read_text())
        assert len(report["frames"]) == 1 and (tmp_path / "out" / name / "overlay.mp4").is_file()
    assert not (tmp_path / "out/noise").exists()


def test_video_without_audio_needs_allow_silent(tmp_path, capsys, make_video, video_info, cli_model, predictor):
    source = make_video(tmp_path / "mute.mp4", audio_rate=None, seconds=2, size=(64, 48))
    with pytest.raises(VideoError, match="has no audio track"):
        predictor.predict_video(source, tmp_path / "api")
    with pytest.warns(UserWarning, match="running on silence"):
        assert predictor.predict_video(source, allow_silent=True)["silent"] is True
    code, _, err = _run(["-i", source, "--out", tmp_path / "out", *cli_model], capsys)
    assert code == 1 and f"video {source}: has no audio track" in err and "--allow-silent" in err
    assert not (tmp_path / "out/predictions.json").exists()
    code, out, err = _run(["-i", source, "--out", tmp_path / "out", "--allow-silent", *cli_model], capsys)
    assert code == 0, err
    assert "running on silence" in err and "on silence" in out
    report = _check_outputs(tmp_path / "out", source, video_info, entries=2, audio=False)
    assert report["video"]["audio"] is None and report["silent"] is True


def test_random_bytes_fail_cleanly_in_a_real_process(tmp_path, cli_model):
    noise = tmp_path / "holiday.mov"
    noise.write_bytes(os.urandom(3000))
    result = subprocess.run([sys.executable, "-m", "avseg.cli", "predict", "-i", str(noise), "--out", str(tmp_path / "o"),
                             *cli_model], capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    assert str(noise) in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_with_class_names_and_a_dense_model(tmp_path, capsys, make_video, tpavi_checkpoint):
    source = make_video(tmp_path / "clip.mp4", seconds=2, size=(80, 60), audio_rate=44100, channels=2)
    code, out, err = _run(["-i", source, "--out", tmp_path / "out", "--checkpoint", tpavi_checkpoint, "--device", "cpu",
                           "--no-progress", "--window", "3"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out/predictions.json").read_text())
    assert report["model"]["classes"] == ["background", "sounding"] and report["model"]["name"] == "tpavi"
    assert report["model"]["checkpoint"] == str(tpavi_checkpoint) and report["model"]["random_init"] is False
    for frame in report["frames"]:
        mask = np.asarray(Image.open(tmp_path / "out" / frame["mask"]))
        assert set(np.unique(mask)) <= {0, 1}
        for obj in frame["objects"]:
            x0, y0, x1, y1 = obj["box"]
            assert obj["class"] == "sounding" and 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
    code, _, err = _run(["-i", source, "data.image_size=32", "--out", tmp_path / "o2", "--checkpoint", tpavi_checkpoint],
                        capsys)
    assert code == 2 and "overrides" in err


def test_predict_clip_api(predictor):
    frames = np.random.default_rng(0).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    waveform = np.random.default_rng(1).standard_normal((3 * 44100, 2)).astype(np.float32) * 0.1
    results = predictor.predict_clip(frames, waveform, 44100)
    assert [r["time"] for r in results] == [0, 1, 2]
    assert all(r["class_map"].shape == (50, 70) for r in results)
    again = predictor.predict_clip(torch.from_numpy(frames), torch.from_numpy(waveform), 44100)
    assert all(np.array_equal(a["class_map"], b["class_map"]) for a, b in zip(results, again))
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict_clip(frames.astype(np.float32), waveform, 44100)


def test_token_merge_matches_merge_masks_and_boxes_cover_their_pixels(predictor):
    torch.manual_seed(0)
    logits, masks = torch.randn(3, 5, 8) * 2, torch.randn(3, 5, 16, 16) * 3
    expected = merge_masks(logits, masks, binary=False, size=(48, 64))
    outputs = {"pred_logits": logits, "pred_masks": masks}
    for f in range(3):
        labels, reported = frame_output(outputs, f, (48, 64), predictor.rules)
        assert np.array_equal(labels, expected[f].numpy()) and reported
        for obj in reported:
            x0, y0, x1, y1 = map(int, obj["box"])
            inside = labels[y0:y1, x0:x1] == obj["class_id"]
            assert inside.any() and obj["class"] == f"class {obj['class_id']}"
            # tight: the box's border rows and columns hold pixels of the object's class
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert [o["score"] for o in reported] == sorted((o["score"] for o in reported), reverse=True)
    mask = np.zeros((6, 7), bool)
    mask[2:4, 1:5] = True
    assert box_of(mask) == [1.0, 2.0, 5.0, 4.0]


def test_binary_maps_threshold_the_foreground_probability():
    rules = OutputRules(binary=True, class_names=("background", "sounding"))
    torch.manual_seed(1)
    logits, masks = torch.randn(5, 1) * 2, torch.randn(1, 5, 8, 8) * 3
    labels, objects = frame_output({"pred_logits": logits[None], "pred_masks": masks}, 0, (8, 8), rules)
    # the AVSBench J's map: the highest mask probability among tokens scoring >= 0.3, above 0.5
    kept = logits.sigmoid()[:, 0] >= 0.3
    foreground = masks[0].sigmoid()[kept].amax(dim=0) > 0.5
    assert kept.any() and np.array_equal(labels, foreground.long().numpy())
    assert objects and all(obj["class"] == "sounding" for obj in objects)
    # a large input is merged at a bounded size and upscaled to the input's
    big = frame_output({"semantic_logits": torch.randn(1, 1, 16, 16)}, 0, (2160, 3840), rules)[0]
    assert big.shape == (2160, 3840) and big.dtype == np.uint8


def test_audio_of_each_frame_is_the_second_starting_at_its_time(tmp_path, make_video, monkeypatch):
    from avseg import Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Predictor.from_config(os.fspath(_qsd_config()), ["data.image_size=32"], device="cpu")
    source = make_video(tmp_path / "tone.mp4", seconds=5, size=(32, 32), audio_rate=44100, tone=(2.0, 3.0),
                        fps=fractions.Fraction(30000, 1001))
    heard = []
    original = predictor._run

    def spy(windows):
        heard.extend((item.time, float(item.log_mel.max())) for w in windows for item in w)
        return original(windows)

    monkeypatch.setattr(predictor, "_run", spy)
    predictor.predict_video(source)
    loud = [t for t, level in heard if level > 0.0]
    assert loud == [2.0], heard  # only frame 2 hears the tone of [2, 3) s


def _qsd_config():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "configs/cpu/qsd_r18_synth_avss.yaml"


def test_lazy_export_does_not_import_torch():
    code = "import sys, avseg; assert 'torch' not in sys.modules; from avseg import Predictor; print(Predictor.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Predictor"


def _tone_seconds(frequencies, rate=16000):
    t = np.arange(rate) / rate
    return np.concatenate([0.3 * np.sin(2 * np.pi * f * t) for f in frequencies]).astype(np.float32)


def _loudest_band(log_mel):
    return np.asarray(log_mel).mean(axis=-2).argmax(axis=-1)


@pytest.mark.parametrize("times", [None, [4.0, 1.0, 2.0]], ids=["default-times", "given-times"])
def test_predict_clip_gives_each_frame_its_own_image_and_second(predictor, monkeypatch, times):
    """Frames that all differ and a wav whose every second is its own tone: the model must get
    frame k's image and the second starting at frame k's time (0, 1, 2, ... by default)."""
    from avseg.audio import vggish_log_mel
    from avseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    frequencies = (300.0, 700.0, 1300.0, 2200.0, 3500.0)
    band = [int(_loudest_band(vggish_log_mel(_tone_seconds([f]), 16000, num_examples=1))[0]) for f in frequencies]
    assert len(set(band)) == len(frequencies)
    frames = np.random.default_rng(3).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    seen = {}

    def spy(module, args, kwargs):
        seen.update(kwargs)

    handle = predictor.model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        results = predictor.predict_clip(frames, _tone_seconds(frequencies), 16000, times=times)
    finally:
        handle.remove()
    expected_times = [0.0, 1.0, 2.0] if times is None else times
    assert [r["time"] for r in results] == expected_times
    assert _loudest_band(seen["log_mel"][0].numpy()).tolist() == [band[int(t)] for t in expected_times]
    size = predictor.image_size
    for k, rgb in enumerate(frames):
        image = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR), np.float32)
        expected = (image / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        assert np.allclose(seen["frames"][0, k].permute(1, 2, 0).numpy(), expected, atol=1e-5), k
