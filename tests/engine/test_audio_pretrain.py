"""`avseg pretrain-audio`: the tiny audio encoder learns the train split's tags and QSD loads it."""

from pathlib import Path

import pytest
import torch

from avseg.cli import main
from avseg.config import load_config
from avseg.data.build import build_dataset
from avseg.data.synth import SynthConfig, generate
from avseg.engine.audio_pretrain import pretrain_audio, tagging_examples
from avseg.errors import UserError
from avseg.models.build import build_model

CONFIG = "configs/cpu/qsd_r18_synth_avss.yaml"
SMALL = ["data.image_size=32", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
         "model.qsd.asd_layers=1", "model.decoder_layers=2", "model.quantizer.codebook_size=16"]


@pytest.fixture(scope="module")
def avss_root(tmp_path_factory) -> Path:
    """24 multi-source AVSS clips (5 s each), 4 classes: 16 train, 4 val, 4 test."""
    root = tmp_path_factory.mktemp("synth_avss_tags")
    generate("avss", root, SynthConfig(clips=24, image_size=32, num_classes=4, seed=11, avss_subsets=("v1m",),
                                       split=(0.67, 0.165, 0.165), workers=1))
    return root


def _config(root: Path, *overrides: str):
    return load_config(CONFIG, [f"data.root={root}", "data.avss_subsets=[v1m]", "model.num_classes=4",
                                *SMALL, *overrides])


def test_tags_are_each_labelled_seconds_sounding_classes(avss_root):
    config = _config(avss_root)
    mels, tags, damaged = tagging_examples(config, "train")
    dataset = build_dataset(config, "train")
    seconds = sum(int(dataset[i].label_present.sum()) for i in range(len(dataset)))
    assert mels.shape == (seconds, 96, 64) and tags.shape == (seconds, 4) and not damaged
    first = dataset[0]
    expected = torch.zeros(4)
    expected[torch.unique(first.semantic[0])[1:] - 1] = 1.0
    assert torch.equal(tags[0], expected)


def test_pretraining_learns_the_tags_and_qsd_loads_the_encoder(avss_root, tmp_path):
    config = _config(avss_root)
    out = tmp_path / "audio.pt"
    result = pretrain_audio(config, out, epochs=12, log=lambda line: None)
    _, tags, _ = tagging_examples(config, "train")
    # better than the best constant answer (each class's majority value) on the train seconds
    constant = ((tags.mean(dim=0) > 0.5).float() == tags).all(dim=1).float().mean()
    assert result["train"]["exact_set_accuracy"] > float(constant) + 0.2
    assert result["val"] is not None and out.is_file()

    model = build_model(_config(avss_root, f"audio.tiny_weights={out}", "audio.freeze=true"))
    saved = torch.load(out, weights_only=True)["state_dict"]
    for name, value in model.audio_encoder.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert not any(p.requires_grad for p in model.audio_encoder.parameters())


def test_cli_errors_name_the_problem(avss_root, tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    with pytest.raises(UserError, match="nope.pt"):
        build_model(_config(avss_root, f"audio.tiny_weights={missing}"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="garbage.pt"):
        build_model(_config(avss_root, f"audio.tiny_weights={garbage}"))
    code = main(["pretrain-audio", "configs/cpu/qsd_r18_synth_ms3.yaml", f"data.root={avss_root}",
                 "--out", str(tmp_path / "x.pt")])
    assert code == 2 and "class-agnostic" in capsys.readouterr().err
