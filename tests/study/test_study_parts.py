"""The study's parts on hand-made inputs: statistics, targets, object outcomes, decomposition ratio, spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avseg.errors import UserError
from avseg.study.aggregate import markdown, record_session, row_table, sessions, stats, targets
from avseg.study.measure import ObjectTally, object_outcomes
from avseg.study.spec import load_spec
from avseg.study.tsne import decomposition_ratio


def test_stats_is_mean_and_sample_std_of_finite_values():
    result = stats([0.2, 0.4, None, float("nan"), 0.9])
    assert result["n"] == 3 and result["values"] == [0.2, 0.4, 0.9]
    assert result["mean"] == pytest.approx(0.5)
    assert result["std"] == pytest.approx(np.sqrt(((0.3) ** 2 + 0.1 ** 2 + 0.4 ** 2) / 2))
    assert stats([0.7])["std"] == 0.0 and stats([None]) is None


def test_object_outcomes_count_found_sounding_and_silent_objects():
    instances = np.zeros((2, 4, 4), np.uint8)
    instances[:, :2, :2] = 1  # object 1 (class 3), 4 pixels
    instances[:, 2:, 2:] = 2  # object 2 (class 5), 4 pixels
    extras = {"instances": instances, "class_ids": np.array([3, 5]),
              "sounding": np.array([[True, True], [False, True]]), "offscreen_sounding": np.array([False, True])}
    ids = torch.zeros((2, 4, 4), dtype=torch.long)
    ids[0, :2, :1] = 3  # frame 0: half of object 1 -> found
    ids[1, :1, :1] = 3  # frame 1: a quarter of object 1 -> missed
    ids[1, 2:, 2:] = 5  # frame 1: object 2 fully -> found
    ids[0, 2:, 2:] = 5  # frame 0: object 2 is silent but segmented -> a false positive
    tally = ObjectTally()
    object_outcomes(ids, torch.tensor([True, True]), extras, (4, 4), tally)
    rates, totals = tally.rates(), tally.totals()
    assert rates["recall/sources_1"] == 1.0 and totals["recall/sources_1"] == 1
    assert rates["recall/sources_2"] == 0.5 and totals["recall/sources_2"] == 2
    assert rates["recall/offscreen"] == 0.5 and rates["recall/no_offscreen"] == 1.0
    assert rates["fpr/all"] == 1.0 and totals["fpr/all"] == 1
    unlabelled = ObjectTally()
    object_outcomes(ids, torch.tensor([False, True]), extras, (4, 4), unlabelled)
    assert unlabelled.totals()["recall/all"] == 2 and "fpr/all" not in unlabelled.totals()


def test_decomposition_ratio_on_a_hand_made_case():
    # single-source centroids: class 1 at (0, 0), class 2 at (10, 0), class 3 at (0, 10)
    single = [np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[10.0, 0.0], [10.0, 0.0]]), np.array([[0.0, 10.0]] * 2)]
    multi = np.array([[1.0, 0.0], [9.0, 0.0]])  # sources {1, 2}: tokens near their own classes
    tokens = np.stack(single + [multi])
    meta = [("a", [1], False), ("b", [2], False), ("c", [3], False), ("m", [1, 2], True)]
    result = decomposition_ratio(tokens, meta)
    d_own = (1.0 + 1.0) / 2
    d_other = (np.hypot(1, 10) + np.hypot(9, 10)) / 2  # nearest other centroid: class 3
    assert result["ratio"] == pytest.approx(d_own / d_other) and result["tokens"] == 2
    assert decomposition_ratio(tokens[:3], meta[:3])["ratio"] is None


def _table(**rows):
    return {name: {"miou": stats(v.get("miou", [])), "shuffled_miou": stats(v.get("shuffled", [])),
                   "snr": {k: stats(s) for k, s in v.get("snr", {}).items()}} for name, v in rows.items()}


def test_targets_follow_the_rules_of_the_issue():
    table = _table(**{"1_baseline": {"miou": [0.30, 0.32]},
                      "3_nonq_sd": {"miou": [0.5], "snr": {"10": [0.5], "-5": [0.3]}},
                      "6_full": {"miou": [0.40, 0.44], "shuffled": [0.10, 0.12], "snr": {"10": [0.45], "-5": [0.40]}}})
    result = targets(table)
    assert result["a_listens"]["met"] and result["b_beats_row1"]["gain"] == pytest.approx(0.11)
    assert result["c_seed_std"]["std"] == pytest.approx(np.sqrt(0.0008)) and result["c_seed_std"]["met"]
    assert result["d_noise"]["drops"]["6_full"] == pytest.approx(0.05) and result["d_noise"]["met"]
    wobbly = _table(**{"6_full": {"miou": [0.3, 0.5], "shuffled": [0.1, 0.1]}})
    assert targets(wobbly)["c_seed_std"]["met"] is False
    deaf = _table(**{"6_full": {"miou": [0.4, 0.4], "shuffled": [0.39, 0.39]}})
    assert targets(deaf)["a_listens"]["met"] is False and "b_beats_row1" not in targets(deaf)


def test_each_spec_keeps_its_own_wall_time_in_a_shared_folder(tmp_path):
    medium = load_spec("configs/study/medium.yaml")
    codebook = load_spec("configs/study/codebook.yaml")
    record_session(tmp_path, medium, seconds=600.0, runs_trained=2, machine={"jobs": 2})
    record_session(tmp_path, codebook, seconds=50.0, runs_trained=1, machine={"jobs": 1})
    record_session(tmp_path, medium, seconds=9.0, runs_trained=0, machine={"jobs": 1})  # trained nothing: no line
    with open(tmp_path / "sessions.jsonl", "a") as handle:
        handle.write("{not json\n")
    record_session(tmp_path, medium, seconds=120.5, runs_trained=1, machine={"jobs": 1})
    with pytest.warns(UserWarning, match=r"sessions.jsonl:3: not a session record"):
        found = sessions(tmp_path, "medium")
    assert [line["seconds"] for line in found] == [600.0, 120.5]
    with pytest.warns(UserWarning, match="not a session record"):
        assert [line["seconds"] for line in sessions(tmp_path, "codebook")] == [50.0]
    assert sessions(tmp_path / "elsewhere", "medium") == []
    base = {"name": "medium", "description": "", "benchmark_line": "", "seeds": [0], "rows": {}, "targets": {},
            "tsne": {}, "train_seconds_total": 60.0, "machine": {}}
    text = markdown({**base, "session_seconds": 720.5, "sessions": found})
    assert "Wall time: 12.0 min over 2 `avseg study` invocations of this spec" in text
    assert "Wall time: not recorded" in markdown({**base, "session_seconds": None, "sessions": []})


def test_spec_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rows: [{name: a}]\nbenchmark: {tierr: easy}\n")
    with pytest.raises(UserError, match="bad.yaml.*tierr"):
        load_spec(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("base_config: configs/cpu/qsd_r18_synth_avss.yaml\nrows: [{name: a}]\nsnr: {rows: [b]}\n")
    with pytest.raises(UserError, match="snr.rows names rows that the study does not have: b"):
        load_spec(unknown)
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "missing.yaml")


def test_shipped_specs_load_and_order_their_runs():
    medium = load_spec("configs/study/medium.yaml")
    assert [r.name for r in medium.rows][:6] == ["1_baseline", "2_td", "3_nonq_sd", "4_q_sd", "5_q_sd_avsr", "6_full"]
    assert all(r.paper for r in medium.rows[:6])
    assert {r.name for r in medium.rows if not r.paper} == {"6_class_gate"}  # the best non-paper variant
    runs = medium.runs()
    assert runs[:3] == [("1_baseline", 0), ("1_baseline", 1), ("1_baseline", 2)]
    assert runs[3][0] == "3_nonq_sd" and len(runs) == len(medium.rows) * 3
    assert load_spec("configs/study/quick.yaml", ["seeds=[0,4]"]).seeds == [0, 4]


def test_every_row_of_the_shipped_specs_builds_its_model(tmp_path):
    from avseg.models.build import build_model
    from avseg.models.qsd import QSD
    from avseg.models.separation import SeparateThenSegment
    from avseg.study.spec import run_config

    small = ["model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
             "model.qsd.asd_layers=1", "model.decoder_layers=1", "model.quantizer.codebook_size=16"]
    for name in ("medium", "quick"):
        spec = load_spec(f"configs/study/{name}.yaml")
        spec.overrides = list(spec.overrides) + small
        for row in spec.rows:
            config = run_config(spec, row.name, 0, tmp_path / "data", tmp_path / row.name, None)
            assert config.seed == 0 and config.train.epochs == spec.schedule.epochs
            assert config.model.extras.tag_gating == ("model.extras.tag_gating=true" in row.overrides)
            model = build_model(config)
            core = model.baseline if isinstance(model, SeparateThenSegment) else model
            assert isinstance(core, QSD) and core.switches.decomposition == config.model.qsd.decomposition


def test_the_cavp_and_codebook_specs_build_what_their_rows_say(tmp_path):
    from avseg.models.build import build_model
    from avseg.models.cavp import CAVP
    from avseg.models.qsd import QSD
    from avseg.study.spec import run_config

    cavp = load_spec("configs/study/cavp.yaml")
    assert not cavp.audio_pretrain.enabled  # CAVP's audio network learns with the model
    assert cavp.benchmark == load_spec("configs/study/medium.yaml").benchmark  # the QSD study's clips
    pairings = {}
    for row in cavp.rows:
        config = run_config(cavp, row.name, 1, tmp_path / "data", tmp_path / row.name, None)
        assert isinstance(build_model(config), CAVP) and not config.audio.freeze
        pairings[row.name] = (config.train.pairing, config.train.contrastive_share)
    assert [p for p, _ in pairings.values()] == ["cavp"]
    codebook = load_spec("configs/study/codebook.yaml")
    small = ["model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
             "model.qsd.asd_layers=1", "model.decoder_layers=1", "model.quantizer.codebook_size=16"]
    codebook.overrides = list(codebook.overrides) + small
    for row in codebook.rows:
        config = run_config(codebook, row.name, 0, tmp_path / "data", tmp_path / row.name, None)
        assert config.model.quantizer.cosine == ("model.quantizer.cosine=true" in row.overrides)
        assert config.model.extras.tag_gating == ("model.extras.tag_gating=true" in row.overrides)
        assert isinstance(build_model(config), QSD)
        size = next((o.split("=")[1] for o in row.overrides if o.startswith("model.quantizer.codebook_size=")), "16")
        assert config.model.quantizer.codebook_size == int(size)
    assert {"6_m8", "6_m128", "6_tf_memory"} <= {row.name for row in codebook.rows}
    longer = run_config(codebook, "6_16_epochs", 0, tmp_path / "data", tmp_path / "long", None)
    lighter = run_config(codebook, "6_vq_quarter", 0, tmp_path / "data", tmp_path / "vq", None)
    assert (longer.train.epochs, longer.train.lr_drop_epochs, longer.loss.lambda_vq) == (16, [12], 1.0)
    assert (lighter.train.epochs, lighter.loss.lambda_vq) == (codebook.schedule.epochs, 0.25)
    # one --out folder holds both specs: the same benchmark, settings and runs of the same name
    medium = load_spec("configs/study/medium.yaml")
    for key in ("benchmark", "base_config", "schedule", "audio_pretrain", "seeds"):
        assert getattr(codebook, key) == getattr(medium, key), key
    assert codebook.overrides[:len(medium.overrides)] == medium.overrides
    shared = {row.name for row in codebook.rows} & {row.name for row in medium.rows}
    assert shared and all(codebook.row(name).overrides == medium.row(name).overrides for name in shared)


def test_time_left_counts_only_runs_trained_from_their_start(tmp_path, monkeypatch):
    """A resumed run (or one only measured) took a fraction of a run's time: estimating the study's
    time left from it promised 14 min where 60 were left (2026-12-07)."""
    import avseg.study.runner as runner
    from avseg.study.parallel import TRAIN_DONE, _time_left, trains_from_start

    clock = iter(range(0, 100_000, 60))  # every perf_counter() call is 60 s later
    monkeypatch.setattr(runner.time, "perf_counter", lambda: float(next(clock)))
    lines = []
    progress = runner.Progress(total_runs=4, log=lines.append, every=10, jobs=1)
    progress.begin(1, "resumed", steps=100)
    for step in range(91, 101):  # resumed at step 90: 10 steps of 100
        progress.on_step(step)
    progress.finish(20.0)
    progress.finish(5.0)  # measured only: nothing trained
    assert progress.done_seconds == []
    # the estimate comes from this run's own rate: 10 steps in 60 s -> 600 s a whole run, 3 runs to go
    assert lines[-1] == "[study] run 1/4 resumed: step 100/100, 1.0 min in; about 30 min left for the study"
    progress.begin(2, "whole", steps=100)
    for step in range(1, 101):
        progress.on_step(step)
    progress.finish(700.0)
    assert progress.done_seconds == [700.0]

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert trains_from_start(run_dir)
    (run_dir / "last.pt").touch()
    assert not trains_from_start(run_dir)
    (run_dir / "last.pt").unlink()
    (run_dir / TRAIN_DONE).touch()
    assert not trains_from_start(run_dir)

    monkeypatch.undo()  # the real clock again
    assert _time_left(["a", "b"], {}, [], jobs=2) is None  # nothing trained whole yet
    running = {0: (None, 3, "row", 0, runner.time.perf_counter() - 60.0, True)}  # 60 s into a 100 s run
    assert _time_left(["a", "b"], running, [100.0, 100.0], jobs=2) == pytest.approx((2 * 100 + 40) / 2, abs=0.5)
