"""`avseg predict` never deletes what it did not write (run as a user runs it, in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _predict(video, out, cli_model, *extra):
    result = subprocess.run([sys.executable, "-m", "avseg.cli", "predict", "-i", str(video), "--out", str(out), "--no-overlay",
                             *extra, *cli_model], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    return result


def test_non_empty_folder_needs_overwrite_and_only_own_files_are_replaced(tmp_path, make_video, cli_model):
    video = make_video(tmp_path / "clip.mp4", seconds=2.0)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    mine = {out / "notes.txt": b"my notes", out / "masks" / "frame_999999.png": b"my own mask"}
    for path, data in mine.items():
        path.write_bytes(data)

    refused = _predict(video, out, cli_model)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert len(lines) == 1 and lines[0].startswith("avseg predict: error: --out") and "--overwrite" in lines[0], lines
    assert sorted(p.name for p in out.rglob("*")) == ["frame_999999.png", "masks", "notes.txt"]

    first = _predict(video, out, cli_model, "--overwrite")
    assert first.returncode == 0, first.stderr
    written = [f["mask"] for f in json.loads((out / "predictions.json").read_text())["frames"]]
    assert written == ["masks/frame_000000.png", "masks/frame_000001.png"]

    again = _predict(video, out, cli_model, "--overwrite", "--fps", "0.5")  # one frame this time
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["frame_000000.png", "frame_999999.png"]
    assert all(path.read_bytes() == data for path, data in mine.items())  # never touched
