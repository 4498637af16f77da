"""`avseg predict` with a CAVP checkpoint: the dense CAVP output goes through the shared rule to
masks and predictions.json, like TPAVI's."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from avseg.cli import main

CAVP_CONFIG = Path(__file__).resolve().parents[2] / "configs/cpu/cavp_r18_synth_avss.yaml"


def test_predict_with_a_cavp_checkpoint(tmp_path, capsys, make_video):
    from avseg.config import load_config
    from avseg.engine.checkpoint import save_checkpoint
    from avseg.models.build import build_model

    config = load_config(CAVP_CONFIG, ["data.image_size=32"])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(config)
    names = ["background", "a", "b", "c", "d"]
    checkpoint = save_checkpoint(tmp_path / "cavp.pt", model=model, config=config, class_names=names)
    source = make_video(tmp_path / "clip.mp4", seconds=2, size=(80, 60), audio_rate=16000, channels=1)
    code = main(["predict", str(source), "--out", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
                 "--device", "cpu", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out/predictions.json").read_text())
    assert report["model"]["name"] == "cavp" and report["model"]["classes"] == names
    assert report["frames"]
    for frame in report["frames"]:
        mask = np.asarray(Image.open(tmp_path / "out" / frame["mask"]))
        assert mask.shape == (60, 80) and set(np.unique(mask)) <= set(range(len(names)))
        assert all(obj["class"] in names[1:] for obj in frame["objects"])
