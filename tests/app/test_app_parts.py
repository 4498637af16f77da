"""`avseg app` without a browser: timeline, size check, zip, examples, the page's action, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avseg.data.synth.video import EXAMPLES, class_bank_for, ensure_examples, list_examples
from avseg.app.results import (
    MB,
    RunStore,
    build_timeline,
    check_upload_size,
    format_size,
    max_upload_bytes,
    timeline_csv,
    timeline_html,
    zip_outputs,
)
from avseg.cli import main
from avseg.data.synth import build_class_bank
from avseg.errors import UserError
from avseg.inference.video import probe_video

from app_helpers import QSD_CONFIG, SMALL, free_port, make_video

pytestmark = pytest.mark.timeout(180)


def _report(classes, frames, duration):
    return {"video": {"duration": duration}, "model": {"classes": classes},
            "frames": [{"time": t, "mask": None, "objects": objs} for t, objs in frames]}


def _obj(name, class_id, score):
    entry = {"class": name, "score": score, "box": [0, 0, 1, 1]}
    if class_id is not None:
        entry["class_id"] = class_id
    return entry


# timeline ----------------------------------------------------------------------------------------

def test_timeline_rows_are_classes_columns_are_seconds():
    classes = ["background", "dog", "car", "piano"]
    report = _report(classes, [
        (0.0, [_obj("dog", 1, 0.9), _obj("background", 0, 0.99)]),
        (1.0, []),
        (2.0, [_obj("car", 2, 0.4), _obj("dog", 1, 0.5)]),
        (2.5, [_obj("car", 2, 0.7)]),            # a second frame in second 2: the best score counts
        (4.0, [_obj("trumpet", None, 0.6)]),     # a name the model does not list: an extra row
    ], duration=5.0)
    timeline = build_timeline(report)
    assert timeline.rows == [(1, "dog"), (2, "car"), (3, "piano"), (4, "trumpet")]
    assert timeline.seconds == 5
    expected = np.array([[0.9, 0, 0.5, np.nan, 0], [0, 0, 0.7, np.nan, 0], [0, 0, 0, np.nan, 0],
                         [0, 0, 0, np.nan, 0.6]])
    np.testing.assert_allclose(timeline.scores, expected)  # NaN: second 3 has no sampled frame
    assert timeline.sounding() == [("dog", 2), ("car", 1), ("trumpet", 1)]
    assert timeline.hidden == 0

    csv_lines = timeline_csv(timeline).splitlines()
    assert csv_lines[0] == "class,0,1,2,3,4"
    assert csv_lines[1] == "dog,0.900,,0.500,,"
    assert csv_lines[3] == "piano,,,,,"


def test_timeline_class_names_resolved_without_ids_and_duration_extends_columns():
    report = _report(["background", "sounding"], [(0.0, [_obj("sounding", None, 0.8)]), (1.0, [])], duration=2.6)
    timeline = build_timeline(report)
    assert timeline.rows == [(1, "sounding")] and timeline.seconds == 3
    np.testing.assert_allclose(timeline.scores, [[0.8, 0.0, np.nan]])
    assert build_timeline(_report(["background", "x"], [], 0.0)).seconds == 0


def test_timeline_with_many_classes_lists_only_those_found():
    classes = ["background"] + [f"c{i}" for i in range(1, 71)]
    timeline = build_timeline(_report(classes, [(0.0, [_obj("c7", 7, 0.6)]), (1.0, [_obj("c42", 42, 0.3)])], 2.0))
    assert timeline.rows == [(7, "c7"), (42, "c42")]
    assert timeline.hidden == 68
    assert "68 other classes" in timeline_html(timeline)


def test_timeline_html_shows_names_scores_and_escapes():
    classes = ["background", "<b>dog</b>", "car"]
    timeline = build_timeline(_report(classes, [(0.0, [_obj("<b>dog</b>", 1, 0.87)]), (1.0, [])], 2.0))
    page = timeline_html(timeline)
    assert "&lt;b&gt;dog&lt;/b&gt;" in page and "<b>dog</b>" not in page
    assert ">0.87</td>" in page and "car" in page
    assert "Sounding: &lt;b&gt;dog&lt;/b&gt; (1 s)." in page
    empty = timeline_html(build_timeline(_report(classes, [(0.0, [])], 1.0)))
    assert "No sounding object was found" in empty


# size check, zip, run folders --------------------------------------------------------------------

def test_upload_size_check(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x" * 3000)
    assert check_upload_size(video, 3000) == 3000
    with pytest.raises(UserError, match=r"clip.mp4 is 2.9 KB: this page accepts videos up to 2.0 KB"):
        check_upload_size(video, 2048)
    with pytest.raises(UserError, match="cannot be read"):
        check_upload_size(tmp_path / "missing.mp4", 2048)
    assert max_upload_bytes(200) == 200 * MB and max_upload_bytes(0.01) == int(0.01 * MB)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(UserError, match="--max-upload-mb"):
            max_upload_bytes(bad)
    assert [format_size(s) for s in (812, 36045, 3.4 * MB, 1.5 * 1024 * MB)] == ["812 B", "35.2 KB", "3.4 MB",
                                                                               "1.5 GB"]


def test_zip_holds_masks_and_predictions(tmp_path):
    run = tmp_path / "run"
    (run / "masks").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.full((4, 6), k, np.uint8)).save(run / "masks" / f"frame_{k:06d}.png")
    (run / "predictions.json").write_text(json.dumps({"frames": []}))
    (run / "overlay.mp4").write_bytes(b"not zipped")
    archive = zip_outputs(run, tmp_path / "out.zip", {"timeline.csv": "class\n"})
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["masks/frame_000000.png", "masks/frame_000001.png",
                                        "masks/frame_000002.png", "predictions.json", "timeline.csv"]
        assert json.loads(z.read("predictions.json")) == {"frames": []}
        assert z.read("masks/frame_000002.png") == (run / "masks/frame_000002.png").read_bytes()


def test_run_store_keeps_the_newest(tmp_path):
    store = RunStore(tmp_path / "runs", keep=2)
    runs = [store.new() for _ in range(4)]
    assert [r.exists() for r in runs] == [False, False, True, True]
    store.cleanup()
    assert not (tmp_path / "runs").exists()


# examples ----------------------------------------------------------------------------------------

def test_examples_are_generated_once_with_sound(tmp_path):
    names = ["background", *[f"class {i}" for i in range(1, 9)]]
    paths = ensure_examples(names, tmp_path)
    assert [p.name for p in paths] == [spec.name for spec in EXAMPLES]
    for path, spec in zip(paths, EXAMPLES):
        info = probe_video(path)
        assert (info.width, info.height) == spec.size and info.audio is not None
        assert info.duration_hint == pytest.approx(spec.seconds, abs=0.1)
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert ensure_examples(names, tmp_path) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps  # reused, not rewritten
    assert not list(paths[0].parent.glob(".partial-*"))
    assert list_examples(paths[0].parent) == sorted(paths)


def test_examples_use_the_models_synthetic_bank_and_folder_errors(tmp_path):
    bank = build_class_bank(0, 5)
    seed, chosen = class_bank_for(["background", *[c.name for c in bank]])
    assert (seed, [c.name for c in chosen]) == (0, [c.name for c in bank])
    assert len(class_bank_for(["background", "sounding"])[1]) == 8
    with pytest.raises(UserError, match="not a folder"):
        list_examples(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="holds no video file"):
        list_examples(tmp_path)


# the page's action, without a browser ------------------------------------------------------------

def test_runner_refuses_before_running_and_reports_bad_files(tmp_path, app_predictor, monkeypatch):
    from avseg.app.page import Runner

    runner = Runner(app_predictor, max_bytes=64 * 1024, store=RunStore(tmp_path / "runs"))
    calls = []
    original = app_predictor.predict_video
    monkeypatch.setattr(app_predictor, "predict_video", lambda *a, **k: calls.append(a) or original(*a, **k))

    overlay, timeline, archive, status = runner(None)
    assert overlay is None and archive is None and "No video" in status and "64.0 KB" in status

    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(65 * 1024))
    _, _, archive, status = runner(str(big))
    assert archive is None and "big.mp4 is 65.0 KB: this page accepts videos up to 64.0 KB" in status
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    _, _, archive, status = runner(str(text))
    assert archive is None and "notes.mp4: not a readable video" in status
    assert str(tmp_path) not in status and "Errno" not in status and "Traceback" not in status
    assert calls == []  # neither reached the model

    video = make_video(tmp_path / "clip.mp4", seconds=3)
    overlay, timeline, archive, status = runner(str(video))
    assert len(calls) == 1
    assert Path(overlay).name == "overlay.mp4" and probe_video(overlay).audio is not None
    assert "class 1" in timeline and "clip.mp4: 3 frames segmented" in status and "meaningless" in status
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        assert "predictions.json" in names and "timeline.csv" in names
        assert sorted(n for n in names if n.startswith("masks/")) == [f"masks/frame_{k:06d}.png" for k in range(3)]
        assert len(json.loads(z.read("predictions.json"))["frames"]) == 3


def test_runner_turns_unexpected_failures_into_one_line(tmp_path, app_predictor, monkeypatch):
    from avseg.app.page import Runner

    runner = Runner(app_predictor, max_bytes=10 * MB, store=RunStore(tmp_path / "runs"))

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(app_predictor, "predict_video", broken)
    _, _, archive, status = runner(str(make_video(tmp_path / "clip.mp4", seconds=1)))
    assert archive is None
    assert "clip.mp4: the run failed (RuntimeError: CUDA out of memory)" in status and "Traceback" not in status


def test_build_app_turns_analytics_off(tmp_path, app_predictor):
    from avseg.app import build_app

    demo = build_app(app_predictor, [make_video(tmp_path / "ex.mp4", seconds=1)], max_upload_mb=1)
    assert demo.analytics_enabled is False
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert demo.avseg_settings["max_bytes"] == MB
    assert demo.avseg_settings["allowed_paths"] == [str(tmp_path.resolve())]


# the command line --------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ([], "no model"),
    (["--checkpoint", "missing.pt", "--max-upload-mb", "0"], "--max-upload-mb 0"),
    (["--checkpoint", "missing.pt", "--examples", "nowhere"], "--examples nowhere: not a folder"),
    ([str(QSD_CONFIG)], "add --random-init"),
    ([str(QSD_CONFIG), "--random-init", "oops"], "unexpected argument oops"),
    (["--checkpoint", "missing.pt", "--port", "70000"], "--port 70000"),
])
def test_cli_errors_are_one_line(capsys, args, message):
    assert main(["app", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("avseg app: error:")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_cli_serves_a_checkpoint_on_localhost(tmp_path, stop):
    """`avseg app --checkpoint` in its own process: the page comes up on 127.0.0.1, without the
    random-init banner, with the checkpoint's class names and the examples of --examples; Ctrl-C
    and SIGTERM both end it and remove its temp folder of results."""
    import torch

    from avseg.config import load_config
    from avseg.engine.checkpoint import save_checkpoint
    from avseg.models.build import build_model

    config = load_config(QSD_CONFIG, [*SMALL, "model.backbone_weights=", "audio.vggish_weights="])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(config)
    names = ["background", *[c.name for c in build_class_bank(0, 8)]]
    checkpoint = save_checkpoint(tmp_path / "qsd.pt", model=model, config=config, class_names=names)
    examples = tmp_path / "examples"
    examples.mkdir()
    make_video(examples / "one.mp4", seconds=1)
    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
           "TMPDIR": str(temp)}
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # the app turns it off itself
    process = subprocess.Popen(
        [sys.executable, "-m", "avseg.cli", "app", "--checkpoint", str(checkpoint), "--device", "cpu",
         "--port", str(port), "--examples", str(examples), "--max-upload-mb", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        # pytest-xdist's workers ignore SIGINT and a child inherits that: give it back the default,
        # as a terminal's Ctrl-C reaches the app
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    try:
        config_json = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    config_json = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.5)
        assert config_json is not None, f"the app did not come up: {process.poll()}"
        text = json.dumps(config_json)
        assert "RANDOM INIT" not in text and "checkpoint qsd.pt" in text
        assert config_json["max_file_size"] == 5 * MB
        assert config_json["analytics_enabled"] is False
        assert "one.mp4" in text
        assert not (tmp_path / "cache").exists()  # --examples given: nothing generated
        assert len(list(temp.glob("avseg-app-*"))) == 1  # the folder of results
    finally:
        process.send_signal(stop)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert f"Running on local URL:  http://127.0.0.1:{port}" in output
    assert "Traceback" not in output
    assert process.returncode is not None and list(temp.glob("avseg-app-*")) == []
