"""`avseg convert-tpavi`: an official-layout checkpoint -> an avseg checkpoint that `avseg eval`,
`avseg predict` and `Predictor.from_checkpoint` use as any other, with the official logits."""

import json

import pytest
import torch

from avseg.audio import VGGish
from avseg.cli import main
from avseg.data.synth import SynthConfig, generate
from avseg.engine.checkpoint import model_from_checkpoint
from avseg.models.tpavi import from_official
from tests.inference.conftest import write_video
from tests.models.official_layout import official_state_dict

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("convert")
    official, vggish, out = folder / "S4_resnet_best.pth", folder / "vggish.pth", folder / "tpavi_r50_s4.pt"
    torch.save(official_state_dict("s4", "r50", seed=1), official)
    torch.manual_seed(0)
    torch.save(VGGish().state_dict(), vggish)
    code = main(["convert-tpavi", str(official), "--task", "s4", "--backbone", "r50", "--vggish", str(vggish),
                 "--out", str(out)])
    assert code == 0
    return official, vggish, out


@torch.no_grad()
def test_converted_checkpoint_gives_the_logits_of_from_official(converted):
    official, vggish, out = converted
    model, config, _ = model_from_checkpoint(out)
    reference = from_official(official, task="s4", vggish_weights=vggish)
    assert config.model.name == "tpavi" and config.model.backbone == "r50" and config.model.tpavi.window == 5
    frames, log_mel = torch.randn(1, 5, 3, 64, 64), torch.randn(1, 5, 96, 64)
    assert torch.equal(model(frames, log_mel)["semantic_logits"], reference(frames, log_mel)["semantic_logits"])


def test_converted_checkpoint_through_eval_and_predict(converted, tmp_path, capsys):
    _, _, checkpoint = converted
    root = tmp_path / "s4"
    generate("s4", root, SynthConfig(clips=4, image_size=64, num_classes=4, seed=5, split=(0.5, 0.0, 0.5), workers=1))
    code = main(["eval", "configs/tpavi_r50_s4.yaml", f"data.root={root}", "data.image_size=64", "data.num_workers=0",
                 f"output_dir={tmp_path / 'eval'}", "--checkpoint", str(checkpoint), "--split", "test"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert metrics["num_clips"] == 2 and metrics["num_frames"] == 10 and 0 <= metrics["j"] <= 1
    video = write_video(tmp_path / "clip.mp4", seconds=2, size=(80, 60))
    code = main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "pred"),
                 "--device", "cpu", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "pred/predictions.json").read_text())
    assert report["model"]["name"] == "tpavi" and len(report["frames"]) == 2


def test_convert_refuses_a_missing_vggish_file_in_one_line(converted, tmp_path, capsys):
    official, _, _ = converted
    code = main(["convert-tpavi", str(official), "--task", "s4", "--vggish", str(tmp_path / "nope.pth"),
                 "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.pth" in err and err.count("\n") == 1
