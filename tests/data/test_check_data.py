"""`avseg check-data`: clean trees pass; every kind of damage is named, all in one run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import layout_fixtures
from avseg.cli import main
from avseg.data import layouts
from avseg.data.check import check_dataset
from avseg.data.problems import Problem


def _run(capsys, *argv):
    code = main(["check-data", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _header_only(path):
    path.write_bytes(path.read_bytes()[:44])


@pytest.mark.parametrize("layout", ["s4", "ms3", "avss"])
def test_clean_trees_are_ok(capsys, layout, request):
    tree = request.getfixturevalue(f"{layout}_tree")
    problems, count = check_dataset(layout, tree.root)
    assert problems == [] and count == sum(len(ids) for ids in tree.clips.values())
    code, out, _ = _run(capsys, "--layout", layout, tree.root)
    assert code == 0 and out.strip() == f"all {count} clips OK"
    code, out, _ = _run(capsys, "--layout", layout, tree.root, "--no-progress")
    assert code == 0 and out == ""


def test_s4_damage_is_all_reported_in_one_run(capsys, copy_tree, s4_tree):
    root = copy_tree(s4_tree)
    train, val, test = (layouts.list_clips(root, "s4", split=s)[0] for s in layouts.SPLITS)
    _truncate(train.frames[2])                       # truncated PNG
    val.masks[4].write_bytes(b"\x89PNG garbage " * 20)  # garbage bytes
    _header_only(test.audio)                         # header-only wav
    test.frames[0].unlink()                          # missing frame
    code, out, err = _run(capsys, "--layout", "s4", root)
    assert code == 1 and "Traceback" not in err
    lines = out.strip().splitlines()
    expected = {
        train.frames[2]: "damaged frame",
        val.masks[4]: "not a readable image",
        test.audio: "no audio samples",
        test.frames[0]: "missing frame",
    }
    for path, words in expected.items():
        rel = path.relative_to(root).as_posix()
        assert any(line.startswith(f"{rel}: ") and words in line for line in lines), (rel, out)
    assert str(root) not in out
    assert lines[-1] == "checked 6 clips: 4 problems in 3 clips"


def test_avss_damage_is_all_reported_in_one_run(capsys, copy_tree, avss_tree):
    root = copy_tree(avss_tree)
    clips = {clip.clip_id: clip for clip in layouts.list_clips(root, "avss")}
    off = clips["v1m_val_0"].masks[2]
    rgb = np.array(Image.open(off).convert("RGB"))
    rgb[:2, :3] = (1, 2, 3)                                   # 6 off-palette pixels
    Image.fromarray(rgb).save(off)
    _truncate(clips["v2_test_1"].masks[7])                      # truncated label PNG
    clips["v1s_train_1"].frames[4].write_bytes(b"\xff\xd8\xff garbage")  # garbage JPEG
    _header_only(clips["v2_val_0"].audio)
    clips["v1s_test_0"].frames[1].unlink()
    Image.new("RGB", (48, 32)).save(clips["v2_train_0"].frames[0].parent / "10.jpg")  # 11 frames
    names = json.loads((root / layouts.AVSS_LABELS).read_text())
    del names["class_12"]
    (root / layouts.AVSS_LABELS).write_text(json.dumps(names))
    code, out, err = _run(capsys, "--layout", "avss", root)
    assert code == 1 and "Traceback" not in err
    for rel, words in [
        ("v1m/v1m_val_0/labels_rgb/2.png", "6 of 1024 pixels (0.6%) have colours outside the AVSBench palette: RGB(1, 2, 3)"),
        ("v2/v2_test_1/labels_rgb/7.png", "damaged ground-truth mask"),
        ("v1s/v1s_train_1/frames/4.jpg", "not a readable image"),
        ("v2/v2_val_0/audio.wav", "no audio samples"),
        ("v1s/v1s_test_0/frames/1.jpg", "missing frame"),
        ("v2/v2_train_0/frames", "holds 11 frames, v2 clips have 10"),
        ("v1s/v1s_train_0/labels_rgb/0.png", "class id(s) 12 are not defined in label2idx.json"),
    ]:
        assert f"{rel}: " in out and words in out.split(f"{rel}: ", 1)[1].splitlines()[0], (rel, out)
    assert out.count("class id(s) 12") == 2 * 1 + 4 * 5  # every v1s label file (train: 1 per clip)
    assert "checked 18 clips:" in out.splitlines()[-1]


def test_csv_with_renamed_column(capsys, copy_tree, ms3_tree):
    root = copy_tree(ms3_tree)
    csv_path = root / layouts.MS3_CSV
    csv_path.write_text(csv_path.read_text().replace("video_id,split", "video_id,subset", 1))
    problems, count = check_dataset("ms3", root)
    assert count == 0 and len(problems) == 1
    assert problems[0].path == "ms3_meta_data.csv" and "missing column(s) split" in problems[0].message
    code, out, err = _run(capsys, "--layout", "ms3", root)
    assert code == 1 and out.startswith("ms3_meta_data.csv: missing column(s) split") and "Traceback" not in err


def test_bad_rows_and_missing_folders(copy_tree, s4_tree):
    root = copy_tree(s4_tree)
    with open(root / layouts.S4_CSV, "a") as handle:
        handle.write("lonely,0,dog_barking,holdout\nshort,0\n")
    clip = layouts.list_clips(root, "s4", split="val")[1]
    for path in clip.masks:
        path.unlink()
    clip.masks[0].parent.rmdir()
    problems, count = check_dataset("s4", root)
    messages = [str(p) for p in problems]
    assert count == 6
    assert any(m.startswith("s4_meta_data.csv: line 8: unknown split 'holdout'") for m in messages)
    assert any(m.startswith("s4_meta_data.csv: line 9: ") for m in messages)
    rel = clip.masks[0].parent.relative_to(root).as_posix()
    assert f"{rel}: missing folder (should hold 5 ground-truth masks)" in messages and len(problems) == 3


def test_short_audio_is_a_warning(copy_tree, ms3_tree):
    root = copy_tree(ms3_tree)
    clip = layouts.list_clips(root, "ms3", split="test")[0]
    layout_fixtures.write_wav(clip.audio, layout_fixtures.tone(4.5))
    assert check_dataset("ms3", root)[0] == []  # 4.5 s >= T - 1 = 4 s: accepted
    layout_fixtures.write_wav(clip.audio, layout_fixtures.tone(2.0))
    (problem,) = check_dataset("ms3", root)[0]
    assert problem.path == clip.audio.relative_to(root).as_posix()
    assert problem.message.startswith("warning: audio is 2.00 s long")


def test_progress_bar_for_large_sets(capsys, monkeypatch, ms3_tree):
    from avseg.data import check

    monkeypatch.setattr(check, "PROGRESS_MIN_CLIPS", 2)
    assert check.check_dataset("ms3", ms3_tree.root, progress=True) == ([], 6)
    assert "check-data ms3" in capsys.readouterr().err


def test_missing_root_and_metadata(capsys, tmp_path):
    code, out, err = _run(capsys, "--layout", "s4", tmp_path / "nowhere")
    assert code == 2 and "not found" in err and "Traceback" not in err
    code, out, err = _run(capsys, "--layout", "avss", tmp_path)
    assert code == 1 and out.startswith("metadata.csv: metadata file not found; is ROOT the AVSBench_semantic")
    assert out.splitlines()[-1] == "checked 0 clips: 1 problem"


def test_vpo_is_delegated(capsys, monkeypatch, tmp_path):
    import avseg.data.vpo_check

    monkeypatch.setattr(avseg.data.vpo_check, "check_vpo",
                        lambda root: ([Problem("VPO-SS/data/x.jpg", "missing image")], 7))
    code, out, err = _run(capsys, "--layout", "vpo", tmp_path)
    assert code == 1 and out.splitlines() == ["VPO-SS/data/x.jpg: missing image", "checked 7 clips: 1 problem"]


def test_command_line_help():
    shown = subprocess.run([sys.executable, "-m", "avseg.cli", "check-data", "--help"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--layout" in shown.stdout and "--no-progress" in shown.stdout
    assert "Traceback" not in shown.stderr
