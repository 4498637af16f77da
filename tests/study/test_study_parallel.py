"""`avseg study --jobs N`: runs in parallel processes, one locked folder per run, a failed run
named without losing the others, and no run left training when the study is killed."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from avseg.errors import UserError
from avseg.study.lock import LOCK, run_lock

REPO = Path(__file__).resolve().parents[2]


def _spec(tmp_path: Path, epochs: int = 1, rows: tuple[str, ...] = ("1_baseline",)) -> Path:
    """configs/study/quick.yaml cut to one row (or `rows`) x two seeds at 32 px (no SNR sweep, no t-SNE)."""
    spec = OmegaConf.load(REPO / "configs" / "study" / "quick.yaml")
    spec.base_config = str(REPO / spec.base_config)
    spec.benchmark.clips, spec.benchmark.image_size = 14, 32
    spec.rows = [row for row in spec.rows if row.name in rows]
    spec.run_order, spec.snr.rows, spec.tsne.rows = [], [], []
    spec.audio_pretrain.epochs, spec.schedule.epochs, spec.schedule.lr_drop_epochs = 1, epochs, [epochs]
    path = tmp_path / "spec.yaml"
    OmegaConf.save(spec, path)
    return path


def _study(spec: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "avseg.cli", "study", str(spec), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "2"}, start_new_session=True)


def test_a_locked_run_folder_is_refused_with_its_holder(tmp_path):
    with run_lock(tmp_path / "run"):
        with pytest.raises(UserError, match=rf"{tmp_path / 'run'}: another avseg study process \(pid {os.getpid()}\)"):
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):  # released when its holder is done
        pass


@pytest.mark.slow
def test_jobs_runs_in_parallel_names_a_failed_run_and_keeps_the_others(tmp_path):
    spec, out = _spec(tmp_path), tmp_path / "study"
    blocked = out / "runs" / "1_baseline" / "seed1"
    blocked.mkdir(parents=True)
    with open(blocked / LOCK, "a+") as holder:  # another process "trains" seed 1
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write("4242")
        holder.flush()
        log, _ = (first := _study(spec, out, "--jobs", "2")).communicate(timeout=900)
    assert first.returncode == 2, log[-3000:]
    assert "0/2 runs already finished; 2 to go, 2 at a time, 1 thread(s) each" in log, log[-3000:]
    started = re.findall(r"run (\d)/2: 1_baseline seed (\d) started \(pid (\d+)\)", log)
    assert sorted(s[:2] for s in started) == [("1", "0"), ("2", "1")] and len({s[2] for s in started}) == 2
    assert "1_baseline seed 1 FAILED" in log and "1 run(s) failed, the others are kept" in log
    assert "Traceback" not in log
    error = (blocked / "study_error.txt").read_text()
    assert "another avseg study process (pid 4242)" in error
    assert (out / "runs" / "1_baseline" / "seed0" / "measure.json").is_file()
    assert not (blocked / "measure.json").exists()
    assert "epoch 0:" not in log and "eval val:" not in log  # no interleaved progress bars from the runs
    partial = json.loads((out / "results.json").read_text())  # the failure still leaves results and the time
    assert partial["runs_finished"] == 1 and [s["runs_trained"] for s in partial["sessions"]] == [1]

    log, _ = (second := _study(spec, out, "--jobs", "2")).communicate(timeout=900)  # the lock is free now
    assert second.returncode == 0, log[-3000:]
    assert "1/2 runs already finished; 1 to go" in log and "seed 0 started" not in log
    assert not (blocked / "study_error.txt").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["runs_finished"] == 2 and results["machine"]["jobs"] == 2
    assert results["session_seconds"] == pytest.approx(sum(s["seconds"] for s in results["sessions"]))
    assert [s["runs_trained"] for s in results["sessions"]] == [1, 1]
    measured = [json.loads((out / "runs" / "1_baseline" / f"seed{s}" / "measure.json").read_text()) for s in (0, 1)]
    assert results["rows"]["1_baseline"]["miou"]["values"] == [m["miou"] for m in measured]
    assert [m["train_threads"] for m in measured] == [1, 1]  # 2 threads (OMP_NUM_THREADS) over 2 jobs


@pytest.mark.slow
def test_rows_trains_only_the_named_rows_and_reports_every_finished_run(tmp_path):
    spec, out = _spec(tmp_path, rows=("1_baseline", "6_full")), tmp_path / "study"
    wrong = _study(spec, out, "--rows", "6_full,7_nothing")
    text, _ = wrong.communicate(timeout=120)
    assert wrong.returncode == 2 and "--rows 7_nothing: not a row of study" in text and "1_baseline, 6_full" in text
    assert not (out / "data").exists()  # refused before anything was generated

    log, _ = (first := _study(spec, out, "--rows", "6_full", "seeds=[0]")).communicate(timeout=900)
    assert first.returncode == 0, log[-3000:]
    assert (out / "runs" / "6_full" / "seed0" / "measure.json").is_file()
    assert not (out / "runs" / "1_baseline").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["runs_finished"] == 1 and results["rows"]["6_full"]["miou"]["n"] == 1
    assert [s["runs_trained"] for s in results["sessions"]] == [1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the children follow their parent through Linux's PR_SET_PDEATHSIG")
def test_killing_the_study_stops_its_runs(tmp_path):
    process = _study(_spec(tmp_path, epochs=20), tmp_path / "study", "--jobs", "2")
    pids, lines, deadline = [], [], time.time() + 600
    while len(pids) < 2 and time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        pids += [int(p) for p in re.findall(r"started \(pid (\d+)\)", line)]
    assert len(pids) == 2, "".join(lines)[-3000:]
    time.sleep(2)
    assert all(_alive(pid) for pid in pids)  # both runs are training
    os.kill(process.pid, signal.SIGKILL)  # the parent alone, as a lost terminal or an OOM kill would
    process.wait()
    deadline = time.time() + 30
    while any(_alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"runs still training after the study was killed: {left}"
