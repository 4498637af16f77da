"""Frame sampling, the streaming audio timeline, the overlay painter and video errors."""

from __future__ import annotations

import fractions

import numpy as np
import pytest

from avseg.audio import load_audio, to_mono_16k
from avseg.inference.overlay import MaskPainter
from avseg.inference.video import AudioTimeline, DecodedFrame, VideoError, iter_frames, probe_video, sample_frames


def _frames(times, duration=None):
    return iter(DecodedFrame(i, t, duration, None) for i, t in enumerate(times))


def _picked(times, rate, duration=None):
    return [(round(t, 6), frame.index) for t, frame in sample_frames(_frames(times, duration), rate)]


def test_one_per_second_takes_the_nearest_frame_at_29_97():
    times = [k * 1001 / 30000 for k in range(150)]  # 5.005 s at 30000/1001
    picked = _picked(times, 1.0)
    assert [t for t, _ in picked] == [0, 1, 2, 3, 4]  # no sample at 5.0: the video ends 5.005
    for t, index in picked:
        assert abs(times[index] - t) == min(abs(x - t) for x in times)


def test_one_per_second_at_7_3_fps_and_the_end_rule():
    times = [k / 7.3 for k in range(219)]  # 30 s
    picked = _picked(times, 1.0)
    assert [t for t, _ in picked] == list(range(30))
    assert [i for _, i in picked][:4] == [0, 7, 15, 22]  # 1.0 -> 0.959 (7), 2.0 -> 2.055 (15), 3 -> 3.014
    # 8 frames at 7.3 fps end at 1.096 s: second 1 is shown for 0.096 s > half a frame -> sampled
    assert [t for t, _ in _picked([k / 7.3 for k in range(8)], 1.0)] == [0, 1]
    assert [t for t, _ in _picked([k / 7.3 for k in range(7)], 1.0)] == [0]


def test_variable_frame_rate_uses_timestamps_not_indices():
    times = [0.0, 0.1, 0.15, 0.9, 1.02, 1.5, 2.2, 2.9, 3.05]
    assert _picked(times, 1.0) == [(0, 0), (1, 4), (2, 6), (3, 8)]
    assert _picked(times, 2.0) == [(0, 0), (0.5, 2), (1, 4), (1.5, 5), (2, 6), (2.5, 6), (3, 8)]


def test_dense_sampling_doubles_and_every_frame_keeps_all():
    times = [k / 25 for k in range(100)]  # 4 s
    assert len(_picked(times, 2.0)) == 2 * len(_picked(times, 1.0)) == 8
    assert _picked(times, None) == [(round(t, 6), i) for i, t in enumerate(times)]
    # a rate above the frame rate repeats frames rather than inventing them
    picked = _picked([0.0, 0.5, 1.0, 1.5], 4.0)
    assert len(picked) == 7 and {i for _, i in picked} == {0, 1, 2, 3}


def test_audio_timeline_streams_the_same_samples_as_a_full_decode(tmp_path, make_video):
    path = make_video(tmp_path / "a.mp4", seconds=4, audio_rate=44100, channels=2, size=(32, 32),
                      fps=fractions.Fraction(5))
    info = probe_video(path)
    assert info.audio.sample_rate == 44100 and info.audio.channels == 2
    samples, rate = load_audio(path)
    full = to_mono_16k(samples, rate).astype(np.float32)
    with AudioTimeline(info) as audio:
        for start in (0.0, 0.5, 1.0, 2.0, 3.5):
            window = audio.window(start, 16000)
            first = int(start * 16000)
            expected = np.zeros(16000, np.float32)
            piece = full[first : first + 16000]
            expected[: len(piece)] = piece
            np.testing.assert_allclose(window, expected, atol=1e-5)
            assert len(audio._buffer) < 3 * 16000  # what is behind the window is forgotten
        assert not audio.window(10.0, 100).any()  # past the end: silence


def test_probe_errors_name_the_file(tmp_path, make_video):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path, message in [(noise, "not a readable video"), (empty, "empty"), (tmp_path / "missing.mp4", "not found"),
                          (tmp_path, "directory")]:
        with pytest.raises(VideoError, match=message) as info:
            probe_video(path)
        assert str(path) in str(info.value)
    wav = tmp_path / "sound.wav"
    import soundfile

    soundfile.write(wav, np.zeros(16000), 16000)
    with pytest.raises(VideoError, match="no video stream"):
        probe_video(wav)


def test_frames_decode_lazily_with_times(tmp_path, make_video):
    path = make_video(tmp_path / "v.mp4", fps=fractions.Fraction(30000, 1001), seconds=2, size=(48, 32))
    info = probe_video(path)
    frames = iter_frames(info)
    first = next(frames)
    assert (first.index, first.time) == (0, 0.0) and first.to_rgb(48, 32).shape == (32, 48, 3)
    rest = list(frames)
    assert len(rest) == 59 and rest[-1].time == pytest.approx(59 * 1001 / 30000)
    # the pixels are the file's own frames, in order (a plain PyAV decode of the same file)
    import av

    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    ours = [first.to_rgb(48, 32)] + [frame.to_rgb(48, 32) for frame in rest]
    assert len(decoded) == 60 and all(np.array_equal(a, b) for a, b in zip(ours, decoded))
    assert not np.array_equal(ours[0], ours[-1])  # a scene per second: the two seconds differ


def test_mask_painter_colours_only_the_mask_and_draws_a_legend():
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    painter = MaskPainter(["background", "dog", "car"], palette, height=120)
    frame = np.full((120, 160, 3), 100, np.uint8)
    class_map = np.zeros((120, 160), np.uint8)
    class_map[80:, 100:] = 2
    assert np.array_equal(painter.paint(frame), frame)  # no prediction yet: untouched
    painter.set_map(class_map)
    out = painter.paint(frame)
    assert np.array_equal(out[100, 150], [50, 50, 177])  # half blue
    assert np.array_equal(out[70, 150], frame[70, 150])  # background outside the legend untouched
    assert not np.array_equal(out[:10, :40], frame[:10, :40])  # the legend is drawn at the top left
