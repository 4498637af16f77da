"""`Predictor`'s own arithmetic, checked value by value on a recording model.

The model here (tests/inference/recording.py) is a per-pixel rule (a pixel sounds when its red value is above its frame's mean),
so a frame's map depends on that frame alone, and it records every call's inputs. That shows what
the end-to-end tests (test_predict.py) cannot see on a random network: how sampled frames are cut
into windows and batches, which frame each result belongs to, what the progress bar and the
overlay writer are handed, the audio each frame hears, the defaults of `stream` / `predict_video`
and their checks' messages (construction and `predict_clip`'s checks: test_predictor_setup.py).
"""

from __future__ import annotations

import fractions
import json
import sys
import weakref
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avseg import Predictor
from avseg.audio.io import mux_audio
from avseg.errors import UserError
from avseg.inference.video import VideoError, iter_frames, probe_video, sample_frames
from recording import CAVP_CONFIG
from recording import recording_predictor as _predictor

pytestmark = pytest.mark.timeout(300)


def _picked(path: Path, rate: float | None) -> list[tuple[float, int, float, np.ndarray]]:
    """(sample time, decode index, frame time, rgb) of the frames sampling picks, decoded here."""
    info = probe_video(path)
    return [(t, d.index, d.time, d.to_rgb(info.width, info.height)) for t, d in sample_frames(iter_frames(info), rate)]


def _alone(predictor: Predictor, rgb: np.ndarray) -> np.ndarray:
    """The class map of one frame predicted on its own (one model call of T = 1)."""
    calls = list(predictor.model.calls)
    try:
        return predictor.predict_clip(rgb[None], None)[0]["class_map"]
    finally:
        predictor.model.calls[:] = calls


def _shapes(predictor: Predictor) -> list[tuple[int, int]]:
    return [tuple(call["frames"].shape[:2]) for call in predictor.model.calls]


class Bars:
    """Stands in for tqdm: records each bar's arguments, updates and closing."""

    def __init__(self):
        self.made: list[dict] = []

    def __call__(self, **kwargs):
        bar = {"kwargs": kwargs, "updates": [], "closed": False}
        self.made.append(bar)

        class Bar:
            def update(self, n):
                bar["updates"].append(n)

            def close(self):
                bar["closed"] = True

        return Bar()


@pytest.fixture
def bars(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    made = Bars()
    monkeypatch.setattr("tqdm.tqdm", made)
    return made


@pytest.fixture(scope="module")
def seven_seconds(tmp_path_factory, make_video):
    """7 s at 2 fps: one synthetic scene per second, so the 7 sampled frames all differ."""
    return make_video(tmp_path_factory.mktemp("video") / "seven.mp4", seconds=7, fps=fractions.Fraction(2))


# windows, batches and which result is which frame -------------------------------------------------


def test_full_batches_then_full_windows_then_a_short_window_with_context(seven_seconds, bars):
    predictor = _predictor()
    results = list(predictor.stream(seven_seconds, window=2, batch=2))
    picked = _picked(seven_seconds, 1.0)
    assert len(results) == len(picked) == 7
    # 4 frames make a batch of 2 windows; of the 3 left, one full window; frame 6 borrows frame 5
    assert _shapes(predictor) == [(2, 2), (1, 2), (1, 2)]
    fed = [call["frames"].flatten(0, 1) for call in predictor.model.calls]
    images = [predictor._image(rgb) for *_, rgb in picked]
    assert all(torch.equal(a, b) for a, b in zip(torch.cat(fed[:2]), images[:6]))
    assert torch.equal(fed[2][0], images[5]) and torch.equal(fed[2][1], images[6])
    assert all(not torch.equal(images[k], images[k + 1]) for k in range(6))  # distinct: misplacement shows
    assert all(call["present"].all() for call in predictor.model.calls)
    for k, (result, (time, index, frame_time, rgb)) in enumerate(zip(results, picked)):
        assert (result.index, result.time, result.frame_index, result.frame_time) == (k, time, index, frame_time)
        assert np.array_equal(result.class_map, _alone(predictor, rgb)), f"frame {k}"
    assert [bar["updates"] for bar in bars.made] == [[1] * 7] and bars.made[0]["closed"]


def test_window_one_and_a_short_video_in_one_call(seven_seconds, tmp_path, make_video):
    predictor = _predictor()
    assert len(list(predictor.stream(seven_seconds, window=1))) == 7
    assert _shapes(predictor) == [(1, 1)] * 7
    short = make_video(tmp_path / "three.mp4", seconds=3, fps=fractions.Fraction(4))
    predictor.model.calls.clear()
    results = list(predictor.stream(short))  # defaults: 1 fps, window 5, batch 1
    assert [r.time for r in results] == [0.0, 1.0, 2.0]
    assert _shapes(predictor) == [(1, 3)]


def test_memory_holds_one_batch_and_one_window_of_frames(tmp_path, make_video):
    """`stream` keeps at most window x batch frames waiting plus one window of context, however
    long the video (docs/predict.md, "Memory")."""
    video = make_video(tmp_path / "long.mp4", seconds=3, fps=fractions.Fraction(10))
    predictor = _predictor()
    made = []
    item = predictor._item

    def tracked(*args, **kwargs):
        frame = item(*args, **kwargs)
        made.append(weakref.ref(frame))
        return frame

    predictor._item = tracked
    alive = []
    for result in predictor.stream(video, every_frame=True, window=2, batch=2):
        alive.append(sum(ref() is not None for ref in made))
    assert len(made) == 30 and result.index == 29
    assert max(alive) <= 2 * 2 + 2


def test_every_frame_times_are_rounded_to_the_microsecond(tmp_path, make_video):
    video = make_video(tmp_path / "ntsc.mp4", seconds=1, fps=fractions.Fraction(30000, 1001))
    predictor = _predictor()
    results = list(predictor.stream(video, every_frame=True, fps=2.0, window=4))  # every_frame wins over fps
    picked = _picked(video, None)
    assert len(results) == len(picked) == 30
    assert [(r.time, r.frame_time) for r in results] == [(round(t, 6), round(ft, 6)) for t, _, ft, _ in picked]
    assert any(round(t, 7) != round(t, 6) for t, *_ in picked)  # the rounding is visible on these times
    assert [r.index for r in results] == list(range(30))


def test_every_frame_ignores_the_rate(seven_seconds, tmp_path):
    predictor = _predictor()
    assert len(list(predictor.stream(seven_seconds, every_frame=True, fps=0.0))) == 14
    assert len(predictor.predict_video(seven_seconds, tmp_path / "out", every_frame=True, fps=0.0)["frames"]) == 14


@pytest.mark.parametrize("kwargs, message", [
    ({"window": 0}, "window (0) and batch (1) must be at least 1"),
    ({"batch": 0}, "window (5) and batch (0) must be at least 1"),
    ({"fps": 0.0}, "--fps 0.0: must be a positive number of frames per second"),
    ({"fps": -1.0}, "--fps -1.0: must be a positive number of frames per second"),
])
def test_window_batch_and_rate_checks_name_the_value(seven_seconds, tmp_path, kwargs, message):
    predictor = _predictor()
    with pytest.raises(UserError) as caught:
        next(predictor.stream(seven_seconds, **kwargs))
    assert str(caught.value) == message
    with pytest.raises(UserError) as caught:
        predictor.predict_video(seven_seconds, tmp_path / "out", **kwargs)
    assert str(caught.value) == message and not (tmp_path / "out").exists()  # refused before any file is written


# the progress bar ---------------------------------------------------------------------------------


def test_progress_bar_counts_the_sampled_frames_on_stderr(seven_seconds, bars, monkeypatch):
    predictor = _predictor()
    list(predictor.stream(seven_seconds))
    assert bars.made[0]["kwargs"]["disable"] is True  # no bar unless asked
    list(predictor.stream(seven_seconds, progress=True))
    shown = bars.made[1]
    assert shown["kwargs"] == {"total": 7, "unit": "frame", "desc": "seven.mp4", "disable": False, "leave": False,
                               "dynamic_ncols": True, "file": sys.stderr}
    assert sum(shown["updates"]) == 7 and shown["closed"]
    monkeypatch.setenv("TQDM_DISABLE", "1")  # `avseg study --jobs N` turns every bar off
    list(predictor.stream(seven_seconds, progress=True))
    assert bars.made[2]["kwargs"]["disable"] is True


def _two_seconds(path: Path, layout: str, samples: np.ndarray | None) -> Path:
    """4 grey frames at 2 fps and a 16 kHz AAC track of `layout` holding `samples` (None: no packet)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=2)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = out.add_stream("aac", rate=16000, layout=layout)
        for k in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * k, np.uint8), format="rgb24")
            frame.pts = k
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if samples is None:
            out.mux(audio.encode(None))
        else:
            mux_audio(out, audio, samples, 16000, layout)
    return path


# audio --------------------------------------------------------------------------------------------


def test_silent_video_is_refused_by_default_and_runs_when_allowed(tmp_path, make_video):
    video = make_video(tmp_path / "mute.mp4", seconds=2, fps=fractions.Fraction(2), audio_rate=None)
    predictor = _predictor()
    with pytest.raises(VideoError) as caught:
        next(predictor.stream(video))
    assert str(caught.value) == (f"video {video}: has no audio track, and the model segments what it hears; "
                                 "pass --allow-silent (allow_silent=True) to run it on silence")
    with pytest.warns(UserWarning, match="no audio track: running on silence"):
        results = list(predictor.stream(video, allow_silent=True))
    assert len(results) == 2
    silence = predictor.audio.features(np.zeros(16000, np.float32))
    assert all(np.array_equal(mel, silence) for mel in predictor.model.calls[0]["log_mel"][0].numpy())


def test_an_audio_track_without_samples_is_reported_as_silence(tmp_path):
    path = _two_seconds(tmp_path / "empty_audio.mkv", "mono", None)  # matroska keeps a stream without packets
    assert probe_video(path).audio is not None
    with pytest.warns(UserWarning, match="the audio track holds no samples: the model heard silence"):
        report = _predictor().predict_video(path)
    assert report["silent"] is True and len(report["frames"]) == 2


def test_the_separator_gets_each_frames_second_of_audio():
    predictor = _predictor(separator=True)
    rate = 16000
    wave = np.sin(np.arange(3 * rate) * 0.01 * (1 + np.arange(3 * rate) // rate)).astype(np.float32)
    frames = np.zeros((2, 24, 32, 3), np.uint8)
    predictor.predict_clip(frames, wave, rate, times=[2.5, 0.5])
    sent = predictor.model.calls[0]["waveform"][0].numpy()
    assert sent.shape == (2 * rate,)
    expected_late = np.concatenate([wave[5 * rate // 2:], np.zeros(rate // 2, np.float32)])  # zero-padded past the end
    assert np.allclose(sent[:rate], expected_late, atol=1e-6)
    assert np.allclose(sent[rate:], wave[rate // 2: rate // 2 + rate], atol=1e-6)
    assert _predictor().model.calls == [] and _predictor().uses_waveform is False


def test_a_torch_waveform_is_heard_as_its_numpy_copy():
    predictor = _predictor()
    wave = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    predictor.predict_clip(torch.from_numpy(frames), torch.from_numpy(wave), 16000)
    predictor.predict_clip(frames, wave, 16000)
    first, second = (call["log_mel"] for call in predictor.model.calls)
    assert torch.equal(first, second) and first.abs().sum() > 0
    predictor.predict_clip(frames, None, 16000)
    assert not torch.equal(predictor.model.calls[2]["log_mel"], first)


def test_channel_errors_name_the_source(tmp_path):
    overrides = ["data.dataset=single_plus_cavp", "audio.frontend=cavp", "model.num_classes=23",
                 "model.cavp.audio_channels=2"]
    predictor = _predictor(CAVP_CONFIG, overrides)
    three = np.zeros((16000, 3), np.float32)
    with pytest.raises(UserError, match=r"^the audio: 3 audio channels, the model takes 2"):
        predictor.predict_clip(np.zeros((1, 16, 16, 3), np.uint8), three, 16000)
    path = _two_seconds(tmp_path / "surround.mp4", "5.1", np.full((6, 32000), 0.1, np.float32))
    with pytest.raises(UserError) as caught:
        next(predictor.stream(path))
    assert str(caught.value).startswith(f"video {path}: 6 audio channels, the model takes 2")


# predict_video: what it hands the writer, the report, the folder ---------------------------------


class Writers:
    """Stands in for OverlayWriter: records its arguments, pushes and how it ended."""

    def __init__(self):
        self.made: list[dict] = []

    def __call__(self, info, path, **kwargs):
        record = {"path": Path(path), "kwargs": kwargs, "pushed": [], "end": None}
        self.made.append(record)

        class Writer:
            def push(self, frame_index, class_map):
                record["pushed"].append((frame_index, class_map.copy()))

            def close(self):
                record["end"] = "close"

            def abort(self):
                record["end"] = "abort"

        return Writer()


def test_predict_video_defaults_and_what_the_overlay_gets(seven_seconds, tmp_path, bars, monkeypatch):
    writers = Writers()
    monkeypatch.setattr("avseg.inference.overlay.OverlayWriter", writers)
    predictor = _predictor()
    seen = []
    report = predictor.predict_video(seven_seconds, tmp_path / "out", on_frame=seen.append)
    assert _shapes(predictor) == [(1, 5), (1, 5)]  # batch 1; the last window borrows 3 frames
    assert bars.made[0]["kwargs"]["disable"] is True
    (writer,) = writers.made
    assert writer["path"] == tmp_path / "out/overlay.mp4" and writer["end"] == "close"
    assert writer["kwargs"]["with_audio"] is True and writer["kwargs"]["banner"] is None
    assert writer["kwargs"]["class_names"] == ["background", "sounding"]
    assert [i for i, _ in writer["pushed"]] == [r.frame_index for r in seen] == [f["frame_index"] for f in report["frames"]]
    assert all(np.array_equal(m, r.class_map) for (_, m), r in zip(writer["pushed"], seen))
    assert [r.time for r in seen] == [f["time"] for f in report["frames"]] == [float(k) for k in range(7)]
    assert report["overlay"] == "overlay.mp4" and report["model"]["window"] == 5
    assert report["sampling"]["mode"] == "fps" and report["sampling"]["fps"] == 1.0 and report["silent"] is False
    written = json.loads((tmp_path / "out/predictions.json").read_text(encoding="utf-8"))
    assert written == report
    with pytest.raises(UserError, match="the folder is not empty"):
        predictor.predict_video(seven_seconds, tmp_path / "out")  # overwrite is off by default
    again = predictor.predict_video(seven_seconds, tmp_path / "out", overwrite=True, overlay=False, every_frame=True,
                                    window=4, progress=True)
    assert again["overlay"] is None and len(writers.made) == 1
    assert again["sampling"] == {**report["sampling"], "mode": "every_frame", "fps": None}
    assert again["model"]["window"] == 4 and len(again["frames"]) == 14
    assert set(_shapes(predictor)[2:]) == {(1, 4)}  # the two calls of the first run, then windows of 4
    assert bars.made[-1]["kwargs"]["disable"] is False


def test_an_untrained_model_marks_its_overlay(seven_seconds, tmp_path, monkeypatch):
    writers = Writers()
    monkeypatch.setattr("avseg.inference.overlay.OverlayWriter", writers)
    predictor = _predictor(random_init=True)
    predictor.predict_video(seven_seconds, tmp_path / "out")
    assert writers.made[0]["kwargs"]["banner"] == "RANDOM INIT: MEANINGLESS"


def test_a_failure_mid_video_leaves_no_overlay(seven_seconds, tmp_path):
    predictor = _predictor()

    def fail(result):
        if result.index == 3:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        predictor.predict_video(seven_seconds, tmp_path / "out", on_frame=fail)
    assert not (tmp_path / "out/overlay.mp4").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix == ".mp4"]  # nor a partial file
    assert not (tmp_path / "out/predictions.json").exists()
