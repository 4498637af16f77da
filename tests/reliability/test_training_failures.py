"""`avseg train` on damaged data, unwritable folders and a full disk; what a restart cleans (CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from reliability_helpers import CONFIG, SMALL, assert_error_ends_a_run, assert_one_line_error, avseg

from avseg.engine.runlog import read_log

DAMAGED, SHORT = "synth000001", "synth000002"  # two of the six train clips


@pytest.fixture
def damaged_root(ms3_root, tmp_path) -> Path:
    """The data set with one train clip's frames folder gone and another's wav cut to 0.03 s."""
    root = tmp_path / "damaged"
    shutil.copytree(ms3_root, root)
    shutil.rmtree(root / "ms3_data" / "visual_frames" / DAMAGED)
    soundfile.write(root / "ms3_data" / "audio_wav" / "train" / f"{SHORT}.wav", np.zeros(480, np.float32), 16000)
    return root


def _train(root, out, *extra, **kwargs):
    return avseg("train", CONFIG, f"data.root={root}", f"output_dir={out}", *SMALL, *extra, **kwargs)


def test_damaged_clip_is_named_once_and_skipped_short_wav_warned(damaged_root, tmp_path):
    # 2 epochs with a DataLoader worker: the damaged clip comes up twice, is named once
    result = _train(damaged_root, tmp_path / "run", "train.max_steps=6", "data.num_workers=1")
    assert result.code == 0 and "Traceback" not in result.err, result.err
    skips = [line for line in result.err_lines if "skipping damaged clip" in line]
    assert len(skips) == 1 and DAMAGED in skips[0] and f"visual_frames/{DAMAGED}/" in skips[0], result.err
    warned = [line for line in result.err_lines if f"{SHORT}.wav" in line]
    assert warned and all("warning" in line and "0.03 s" in line for line in warned), result.err
    records = read_log(tmp_path / "run" / "log.jsonl")
    assert [r["clip"] for r in records if r["event"] == "damaged"] == [DAMAGED]
    assert max(r["step"] for r in records if r["event"] == "train") == 6


def test_more_damaged_clips_than_allowed_stop_the_run_with_one_line(damaged_root, tmp_path):
    result = _train(damaged_root, tmp_path / "run", "train.max_steps=3", "data.max_damaged=0")
    assert_error_ends_a_run(result, "train", "data.max_damaged=0", DAMAGED)


@pytest.mark.parametrize("where", ["under_a_file", "read_only"])
def test_unwritable_output_folder_is_one_line(ms3_root, tmp_path, where):
    if where == "under_a_file":
        (tmp_path / "file").write_text("not a folder")
        out = tmp_path / "file" / "run"
    else:
        out = Path("/sys/avseg-reliability-test/run")  # sysfs: nobody, root included, may create folders
    result = _train(ms3_root, out, "train.max_steps=1")
    assert_one_line_error(result, "train", f"output_dir {out}", "cannot write there")


def test_full_disk_while_writing_a_checkpoint_is_one_line(ms3_root, tmp_path):
    # files may not grow past 1 MB: config.yaml and log.jsonl fit, last.pt does not
    result = _train(ms3_root, tmp_path / "run", "train.max_steps=1", limit_file_bytes=1 << 20)
    assert_error_ends_a_run(result, "train", str(tmp_path / "run" / "last.pt"), "cannot write the checkpoint")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml", "log.jsonl", "tensorboard"]


def test_restart_removes_stale_temp_files_and_logs_each_step_once(run_copy, ms3_root):
    stale = run_copy / ".last.pt.k1ll3d.tmp"  # what a kill during a checkpoint write leaves
    stale.write_bytes(b"\0" * 4096)
    log = run_copy / "log.jsonl"
    replayed = {"event": "train", "step": 2, "epoch": 0, "loss_total": 1.0}  # written after last.pt (step 1)
    log.write_text(log.read_text() + json.dumps(replayed) + "\n" + '{"event": "tra', encoding="utf-8")
    result = _train(ms3_root, run_copy, "train.max_steps=3", "--resume", "auto")
    assert result.code == 0, result.err
    assert not stale.exists() and any("removed" in line and stale.name in line for line in result.err_lines)
    steps = [r["step"] for r in read_log(log) if r["event"] == "train"]
    assert steps == [1, 2, 3]  # step 2 once: the replayed record was dropped, the torn line too
    assert all(r.get("loss_total") != 1.0 for r in read_log(log) if r["event"] == "train")


def test_unwritable_eval_output_is_one_line(trained, ms3_root):
    out = "/sys/avseg-reliability-test/eval"  # the CLI turns the OSError of any command into one line
    result = avseg("eval", CONFIG, f"data.root={ms3_root}", "data.num_workers=0", "data.image_size=32",
                   "--checkpoint", str(trained), "--out", out)
    assert_one_line_error(result, "eval", "/sys/avseg-reliability-test")
