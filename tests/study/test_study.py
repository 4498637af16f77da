"""`avseg study`: the files, the table, resume after a kill, numbers that come from the runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "study" / "quick.yaml"


def _tiny_spec(tmp_path: Path) -> Path:
    """configs/study/quick.yaml, smaller still: 2 rows x 2 seeds at 32 px."""
    spec = OmegaConf.load(QUICK)
    spec.base_config = str(REPO / spec.base_config)
    spec.benchmark.clips, spec.benchmark.image_size = 14, 32
    spec.rows = [row for row in spec.rows if row.name in ("1_baseline", "6_full")]
    spec.snr.rows, spec.tsne.rows, spec.audio_pretrain.epochs = ["6_full"], ["6_full"], 1
    path = tmp_path / "tiny.yaml"
    OmegaConf.save(spec, path)
    return path


def _study(spec: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "avseg.cli", "study", str(spec), *extra, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


@pytest.mark.slow
def test_study_runs_resumes_after_a_kill_and_reports_the_runs(tmp_path):
    spec, out = _tiny_spec(tmp_path), tmp_path / "study"
    first = out / "runs" / "1_baseline" / "seed0" / "measure.json"
    process = _study(spec, out)
    deadline = time.time() + 900
    while not first.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert first.is_file(), process.communicate()[0][-3000:]
    os.killpg(process.pid, signal.SIGKILL)  # mid-study: the next run is training or about to
    process.wait()
    assert process.returncode == -signal.SIGKILL
    stamp = first.stat().st_mtime_ns
    log, _ = _study(spec, out).communicate(timeout=1200)
    assert "4/4 runs" in log, log[-3000:]
    assert "run 1/4" not in log  # the finished run was not trained again
    assert first.stat().st_mtime_ns == stamp  # nor measured again

    results = json.loads((out / "results.json").read_text())
    assert results["runs_finished"] == results["runs_total"] == 4
    # the wall time: the invocation that finished (the killed one never reached its end), 3 runs trained
    [session] = [json.loads(line) for line in (out / "sessions.jsonl").read_text().splitlines()]
    assert session["runs_trained"] == 3 and session["spec"] == results["name"]
    assert results["session_seconds"] == session["seconds"] > 0 and results["sessions"] == [session]
    for row in ("1_baseline", "6_full"):
        measured = [json.loads((out / "runs" / row / f"seed{s}" / "measure.json").read_text()) for s in (0, 1)]
        entry = results["rows"][row]
        assert entry["miou"]["values"] == [m["miou"] for m in measured]
        assert entry["miou"]["mean"] == pytest.approx(sum(m["miou"] for m in measured) / 2)
        assert entry["shuffled_miou"]["values"] == [m["shuffled_miou"] for m in measured]
        for run in measured:  # every column is there and is a rate or a count
            assert 0 <= run["miou"] <= 1 and 0 <= run["binary_j"] <= 1
            assert set(run["objects"]) >= {"recall/all", "fpr/all"}
            assert run["object_counts"]["recall/all"] > 0 and run["object_counts"]["fpr/all"] > 0
    assert set(results["rows"]["6_full"]["snr"]) == {"10", "-5"}
    assert results["rows"]["1_baseline"].get("snr") is None
    assert results["rows"]["6_full"]["perplexity_global"]["n"] == 2  # quantized: codes were counted
    assert results["rows"]["1_baseline"]["perplexity_global"] is None
    for seed_run in (json.loads((out / "runs" / "6_full" / f"seed{s}" / "measure.json").read_text()) for s in (0, 1)):
        # distinct K-tuples: at least one, at most one per test clip (global) / per test frame (local)
        assert 1 <= seed_run["code_sets_global"] <= 14 and 1 <= seed_run["code_sets_local"] <= 14 * 5
    assert results["rows"]["1_baseline"]["code_sets_global"] is None
    assert 0 <= results["baselines"]["all_background"] < results["baselines"]["every_object"] <= 1
    assert (out / "runs" / "6_full" / "seed0" / "tokens.npz").is_file()
    assert results["tsne"]["6_full"]["tokens"] >= 0
    table = (out / "results.md").read_text()
    assert "| 1 baseline |" in table and "| 6 full QSD |" in table and "mIoU at test SNR" in table
    page = (out / "report.html").read_text()
    assert page.count("<img") >= 3 and "4 of 4 runs finished" in page
    for run_dir in (out / "runs").glob("*/seed*"):  # each run is an ordinary avseg train run directory
        assert {"best.pt", "last.pt", "config.yaml", "log.jsonl"} <= {p.name for p in run_dir.iterdir()}

    # scripts/snr_sweep.py re-measures the checkpoints at SNRs of one's choice: at a spec SNR it
    # gives what the study measured, and a new SNR gets its own re-mix; it reads only the re-mixes
    # (the training data, which each checkpoint's config names, is moved away meanwhile)
    (out / "data" / "bench").rename(out / "data" / "bench_moved")
    swept = subprocess.run([sys.executable, str(REPO / "scripts" / "snr_sweep.py"), str(spec), "--out", str(out),
                            "--rows", "6_full", "--snr=10,-20", "--json", str(tmp_path / "sweep.json")],
                           capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert swept.returncode == 0, swept.stderr[-3000:]
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert sweep["6_full"]["10"] == [json.loads((out / "runs" / "6_full" / f"seed{s}" / "measure.json").read_text())
                                     ["snr"]["10"]["miou"] for s in (0, 1)]
    assert len(sweep["6_full"]["-20"]) == 2 and (out / "data" / "snr_-20" / "_synth" / "info.json").is_file()
    assert "| 6_full |" in swept.stdout
    (out / "data" / "bench_moved").rename(out / "data" / "bench")

    changed = _study(spec, out, "benchmark.clips=16")
    text, _ = changed.communicate(timeout=300)
    assert changed.returncode == 2 and "another spec (benchmark" in text and "Traceback" not in text

    # the record (--export): small files only; re-aggregates to the same results, and a study
    # folder made of it resumes without training anything again
    record = tmp_path / "record"
    exported, _ = _study(spec, out, "--report-only", "--export", str(record)).communicate(timeout=300)
    assert "record files copied" in exported, exported[-2000:]
    assert not list(record.rglob("*.pt")) and not (record / "data").exists()
    assert (record / "runs" / "6_full" / "seed1" / "measure.json").is_file()
    reported = json.loads((record / "results.json").read_text())  # --report-only keeps the study's wall time
    assert reported["session_seconds"] == results["session_seconds"] and reported["machine"] == results["machine"]
    resumed, _ = _study(spec, record).communicate(timeout=600)
    assert "4/4 runs" in resumed and "run 1/4" not in resumed, resumed[-3000:]
    again = json.loads((record / "results.json").read_text())
    assert again["rows"] == results["rows"]
    assert again["session_seconds"] == results["session_seconds"]  # a pass that trains nothing adds no time
