"""`avseg report RUN_DIR` on a tiny training run: the metrics against the baselines and every figure."""

import json
import re

import pytest

from avseg.cli import main
from avseg.config import load_config
from avseg.data.synth import SynthConfig, generate
from avseg.engine.train import train

SMALL = ["data.image_size=48", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
         "model.qsd.asd_layers=1", "model.decoder_layers=2", "model.quantizer.codebook_size=16", "model.num_classes=4",
         "train.max_steps=2", "train.log_every=1", "data.batch_size=2", "data.num_workers=0", "train.num_workers=0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    generate("avss", base / "data", SynthConfig(clips=10, image_size=48, num_classes=4, avss_subsets=("v1m",),
                                                split=(0.6, 0.2, 0.2), workers=1))
    config = load_config("configs/cpu/qsd_r18_synth_avss.yaml",
                         SMALL + [f"data.root={base / 'data'}", "data.avss_subsets=[v1m]", f"output_dir={base / 'run'}"])
    train(config)
    return base / "run"


@pytest.mark.slow
def test_report_has_metrics_baselines_and_figures(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "all_background" in out
    page = (run_dir / "report.html").read_text()
    for heading in ("Test metrics against trivial baselines", "Training curves", "Overlays", "Per-class IoU",
                    "Confusion matrix", "Codebook usage"):
        assert heading in page
    for row in ("trained model", "all background", "every object", "shuffled audio"):
        assert f"<th>{row}</th>" in page
    assert len(re.findall(r"src=\"data:image/png;base64,", page)) == 5  # every figure is embedded
    summary = json.loads((run_dir / "report.json").read_text())
    assert set(summary["baselines"]) == {"all_background", "every_object", "shuffled_audio"}
    # A perfect audio-blind segmenter scores above an empty prediction on this data.
    assert summary["baselines"]["every_object"]["miou"] > summary["baselines"]["all_background"]["miou"]


def test_report_of_a_folder_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no best.pt or last.pt" in capsys.readouterr().err
