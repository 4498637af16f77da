"""`Predictor`'s own arithmetic, checked value by value on a recording model.

The model here is a per-pixel rule (a pixel sounds when its red value is above its frame's mean),
so a frame's map depends on that frame alone, and it records every call's inputs. That shows what
the end-to-end tests (test_predict.py) cannot see on a random network: how sampled frames are cut
into windows and batches, which frame each result belongs to, what the progress bar and the
overlay writer are handed, the defaults of `stream` / `predict_video`, and the checks' messages.
"""

from __future__ import annotations

import fractions
import inspect
import json
import sys
import warnings
import weakref
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn

from avseg import Predictor
from avseg.audio.io import mux_audio
from avseg.config import load_config
from avseg.errors import UserError
from avseg.inference import predictor as predictor_module
from avseg.inference.video import VideoError, iter_frames, probe_video, sample_frames
from avseg.models.postprocess import segment

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
TPAVI_CONFIG = ROOT / "configs/cpu/tpavi_r18_synth_s4.yaml"  # binary (S4)
CAVP_CONFIG = ROOT / "configs/cpu/cavp_r18_synth_avss.yaml"
SMALL = ["data.image_size=64"]


class Recorder(nn.Module):
    """Foreground logit of a pixel: 8 x (its normalised red - the frame's mean red). Keeps each call's inputs."""

    def __init__(self, separator: bool = False):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))
        self.calls: list[dict] = []
        if separator:
            self.separator = nn.Identity()  # the TD wrapper's attribute: the predictor then sends waveforms

    def forward(self, frames, log_mel, frame_present, waveform=None):
        self.calls.append({"frames": frames.clone(), "log_mel": log_mel.clone(), "present": frame_present.clone(),
                           "waveform": None if waveform is None else waveform.clone()})
        red = frames[:, :, 0]
        logits = self.scale * (red - red.mean(dim=(-2, -1), keepdim=True))
        return {"semantic_logits": logits.flatten(0, 1)[:, None]}


def _predictor(config=TPAVI_CONFIG, overrides=(), **kwargs) -> Predictor:
    return Predictor(Recorder(kwargs.pop("separator", False)), load_config(config, [*SMALL, *overrides]),
                     device="cpu", **kwargs)


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


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


class TwoTokens(nn.Module):
    """QSD-shaped outputs, the same for every frame: token A (score 0.9) covers columns 0-39 with mask
    probability 0.6, token B (score 0.4) columns 24-63 with 0.95; they overlap on columns 24-39."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, frames, log_mel, frame_present, waveform=None):
        n, size = frames.shape[0] * frames.shape[1], frames.shape[-1]
        masks = torch.full((n, 2, size, size), -10.0)
        masks[:, 0, :, :40], masks[:, 1, :, 24:] = logit(0.6), logit(0.95)
        scores = torch.tensor([[logit(0.9)], [logit(0.4)]]).expand(n, 2, 1)
        return {"pred_logits": scores, "pred_masks": masks}


def test_on_binary_data_a_pixel_belongs_to_its_most_probable_token():
    """S4 / MS3 (the binary rule of `segment`): the overlap goes to B, the surer mask, not to A,
    the better score x mask that semantic data would take."""
    predictor = Predictor(TwoTokens(), load_config(TPAVI_CONFIG.with_name("qsd_r18_synth_s4.yaml"), SMALL))
    (result,) = predictor.predict_clip(np.zeros((1, 64, 64, 3), np.uint8), None)
    assert (result["class_map"] == 1).all()
    assert result["objects"] == [{"class": "sounding", "class_id": 1, "score": 0.9, "box": [0.0, 0.0, 24.0, 64.0]},
                                 {"class": "sounding", "class_id": 1, "score": 0.4, "box": [24.0, 0.0, 64.0, 64.0]}]


# predict_clip's checks and result -----------------------------------------------------------------


@pytest.mark.parametrize("shape, dtype", [((2, 8, 8, 4), np.uint8), ((8, 8, 3), np.uint8), ((1, 8, 8, 3), np.float32)])
def test_predict_clip_refuses_frames_that_are_not_uint8_rgb(shape, dtype):
    with pytest.raises(ValueError, match=r"frames must be uint8 \[T, H, W, 3\]"):
        _predictor().predict_clip(np.zeros(shape, dtype), None)


def test_predict_clip_result_and_times_check():
    predictor = _predictor()
    with pytest.raises(ValueError, match=r"^2 times for 3 frames$"):
        predictor.predict_clip(np.zeros((3, 8, 8, 3), np.uint8), None, times=[0.0, 1.0])
    results = predictor.predict_clip(np.zeros((2, 8, 8, 3), np.uint8), None)
    assert [sorted(r) for r in results] == [["class_map", "objects", "time"]] * 2
    assert predictor.predict_clip(np.zeros((0, 8, 8, 3), np.uint8), None) == []


# construction -------------------------------------------------------------------------------------


def test_resolve_device(monkeypatch):
    resolve = predictor_module.resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve("auto") == resolve(None) == torch.device("cpu")
    assert resolve("cpu") == torch.device("cpu")
    with pytest.raises(UserError) as caught:
        resolve("cuda:0")
    assert str(caught.value) == "--device cuda:0: CUDA is not available on this machine"
    with pytest.raises(UserError, match=r"^--device gpu7: not a device \("):
        resolve("gpu7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA machine: auto takes it
    assert resolve("auto") == resolve(None) == torch.device("cuda")
    assert resolve("cpu") == torch.device("cpu") and resolve("cuda:1") == torch.device("cuda:1")


def test_defaults_follow_the_evaluation_and_the_data_set():
    predictor = _predictor()
    rule = inspect.signature(segment).parameters  # predict and eval merge with the same thresholds
    assert predictor.mask_threshold == rule["mask_threshold"].default
    assert predictor.score_threshold == rule["score_threshold"].default
    assert predictor.class_names == ["background", "sounding"] and predictor.binary
    semantic = _predictor(CAVP_CONFIG)
    classes = semantic.config.model.num_classes
    assert semantic.class_names == ["background"] + [f"class {i}" for i in range(1, classes + 1)]
    with pytest.warns(UserWarning, match=f"3 class names given for {classes + 1} class ids"):
        renamed = _predictor(CAVP_CONFIG, class_names=["a", "b", "c"])
    assert renamed.class_names == semantic.class_names
    assert _predictor(class_names=("quiet", "loud")).class_names == ["quiet", "loud"]
    with pytest.warns(UserWarning) as caught:
        assert _predictor(class_names=["a", "b", "c"]).class_names == ["background", "sounding"]
    assert [str(w.message) for w in caught] == [
        "3 class names given for 2 class ids (background included); using generic names"]


def test_without_a_device_the_model_stays_where_it_is():
    config = load_config(TPAVI_CONFIG, SMALL)
    kept = Predictor(Recorder().to("meta"), config)  # "meta" stands in for a second device here
    assert kept.device == torch.device("meta") and kept.model.scale.device == torch.device("meta")
    assert Predictor(nn.Sequential(), config).device == torch.device("cpu")  # no parameter: the CPU


class Graph:
    """Stands in for an OnnxModel: a graph file of fixed clip length T = 3."""

    path, frames = Path("graph.onnx"), 3

    def run_graph(self, frames, log_mel):
        raise AssertionError("not run here")


def test_the_onnx_runtime_runs_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = load_config(TPAVI_CONFIG, SMALL)
    for device in (None, "cpu"):
        predictor = Predictor(Graph(), config, runtime="onnx", device=device)
        assert predictor.device == torch.device("cpu") and predictor.default_window == 3
        assert predictor.onnx_path == "graph.onnx"
    with pytest.raises(UserError) as caught:
        Predictor(Graph(), config, runtime="onnx", device="cuda")
    assert str(caught.value) == "runtime 'onnx' runs on the CPU here (ONNX Runtime's CPU provider)"


def test_runtime_errors_name_the_choice_and_the_model():
    config = load_config(TPAVI_CONFIG, SMALL)
    with pytest.raises(UserError) as caught:
        Predictor(Recorder(), config, runtime="tensorrt")
    assert str(caught.value) == "runtime 'tensorrt': expected one of torch, onnx"
    with pytest.raises(UserError) as caught:
        Predictor(Recorder(), config, runtime="onnx")
    assert str(caught.value) == "runtime 'onnx' needs an OnnxModel (Predictor.from_onnx), got a Recorder"
    assert Predictor(Recorder(), config).onnx_path is None


def test_from_config_warns_once_and_records_where_it_came_from(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the default is the CPU all the same
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # with VGGish: its own "no weights" warning is folded into the one RANDOM INIT warning
        predictor = Predictor.from_config(TPAVI_CONFIG, [*SMALL, "audio.encoder=vggish"], mask_threshold=0.7)
    assert [str(w.message) for w in caught] == [predictor_module.RANDOM_INIT_WARNING]
    assert predictor.device == torch.device("cpu") and predictor.random_init
    assert predictor.config_path == str(TPAVI_CONFIG) and predictor.checkpoint is None
    assert predictor.mask_threshold == 0.7 and predictor.class_names == ["background", "sounding"]
    with pytest.warns(UserWarning):
        elsewhere = Predictor.from_config(TPAVI_CONFIG, SMALL, device="meta")
    assert elsewhere.device == torch.device("meta") and next(elsewhere.model.parameters()).is_meta


def test_from_checkpoint_defaults_to_the_cpu_and_keeps_the_path(tpavi_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the default is the CPU all the same
    predictor = Predictor.from_checkpoint(tpavi_checkpoint, score_threshold=0.6)
    assert predictor.device == torch.device("cpu") and not predictor.random_init
    assert predictor.checkpoint == str(tpavi_checkpoint) and predictor.score_threshold == 0.6
    assert predictor.config_path is None


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
