"""Every shipped config builds and runs at a small size; `avseg model-info` describes a model."""

from pathlib import Path

import pytest
import torch

from avseg.cli import main
from avseg.config import load_config
from avseg.errors import UserError
from avseg.models.build import build_model
from avseg.models.info import random_inputs
from avseg.models.qsd import QSD
from avseg.models.separation import SeparateThenSegment
from avseg.models.tpavi import TPAVI

CONFIGS = sorted(str(p) for p in Path("configs").rglob("*.yaml") if "study" not in p.parts)  # study specs: tests/study
SMALL = [
    "data.image_size=64", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
    "model.qsd.asd_layers=1", "model.decoder_layers=2", "model.quantizer.codebook_size=16", "model.tpavi.channels=16",
    "model.backbone_weights=", "audio.vggish_weights=", "audio.encoder=tiny",
]


def test_there_are_configs_for_every_model_backbone_task_and_ablation_row():
    names = {Path(c).stem for c in CONFIGS}
    for backbone in ("r50", "swint", "pvtb2", "pvtb5"):
        for task in ("s4", "ms3", "avss"):
            if backbone != "pvtb5":
                assert f"qsd_{backbone}_{task}" in names
            if backbone != "swint":
                assert f"tpavi_{backbone}_{task}" in names
    rows = {"1_baseline", "2_td", "3_nonq_sd", "4_q_sd", "5_q_sd_avsr", "6_full"}
    assert rows <= names


@pytest.mark.parametrize("task, epochs, avm", [("s4", 15, 0.0), ("ms3", 30, 0.5), ("avss", 60, 0.5)])
def test_pvtb5_configs_carry_the_official_settings(task, epochs, avm):
    # avs_scripts/*/train.sh and the official models: PVT-v2-b5 (drop path 0.1), TPAVI at 4 stages
    # in windows of 5, L_AVM 0.5 on MS3 / AVSS (off on S4), Adam lr 1e-4 without decay, batch 4
    config = load_config(f"configs/tpavi_pvtb5_{task}.yaml")
    m = config.model
    assert (m.name, m.backbone, m.backbone_drop_path, m.tpavi.stages, m.tpavi.window) == ("tpavi", "pvtb5", 0.1, [0, 1, 2, 3], 5)
    assert m.tpavi.audio_bias == (task != "avss") and m.num_classes == (70 if task == "avss" else 1)
    assert (config.loss.tpavi_avm_weight, config.loss.tpavi_avm_form) == (avm, "kl")
    t = config.train
    assert (t.epochs, t.lr, t.weight_decay, t.lr_drop_epochs, config.data.batch_size) == (epochs, 1e-4, 0.0, [], 4)


@pytest.mark.parametrize("name, depth, stride, audio, size, epochs, decay, overwrite", [
    ("vpo_ss", 50, 8, "resnet18", 512, 80, 5e-4, 0.5), ("vpo_ms", 101, 8, "resnet18", 512, 80, 5e-4, 0.5),
    ("vpo_msmi", 50, 8, "resnet18", 512, 80, 5e-4, 0.5), ("avss", 50, 16, "vggish", 512, 80, 1e-4, 0.5),
    ("single_plus", 50, 8, "resnet18", 512, 80, 5e-4, 0.5),
])
def test_cavp_configs_carry_the_authors_settings(name, depth, stride, audio, size, epochs, decay, overwrite):
    # cyh-0/CAVP: config/config_*.py and run.sh: SGD (momentum 0.9), poly 0.9 per step, lr 1e-3 (VPO:
    # 5e-4 x 2 GPUs), head lr x10, 512 px; Single+ is read by their VPO-SS trainer (use_vpo False),
    # so it takes the VPO-SS values
    config = load_config(f"configs/cavp_r{depth}_{name}.yaml")
    m, c, t = config.model, config.model.cavp, config.train
    assert (m.name, m.backbone, c.output_stride, c.audio_network, config.data.image_size) == (
        "cavp", f"r{depth}", stride, audio, size)
    assert (t.pairing, t.optimizer, t.momentum, t.schedule, t.poly_power, t.lr) == ("cavp", "sgd", 0.9, "poly", 0.9, 1e-3)
    assert (t.epochs, t.weight_decay, c.head_lr_mult, c.overwrite_rate, c.temperature) == (epochs, decay, 10.0, overwrite, 0.1)


def test_single_plus_config_reads_the_authors_layout_and_classes(tmp_path):
    """configs/cavp_r50_single_plus.yaml: CAVP's Single+ folder (24 classes with background, their
    index_table_avs), the 3 s spectrogram; a sample of that layout goes through the model."""
    import csv

    import numpy as np
    import soundfile
    from PIL import Image

    from avseg.data.build import build_dataset, class_names

    root = tmp_path / "single_plus"
    for folder in ("frames", "labels", "audios"):
        (root / folder).mkdir(parents=True)
    Image.new("RGB", (40, 30), (10, 200, 30)).save(root / "frames/a.png")
    labels = np.zeros((30, 40), np.uint8)
    labels[5:20, 5:25] = 23  # typing_on_computer_keyboard, the authors' last class
    Image.fromarray(labels).save(root / "labels/a.png")
    soundfile.write(root / "audios/a.wav", _chirp(16000 * 4), 16000)
    with open(root / "metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["name", "category", "split"],
                                      ["a", "typing_on_computer_keyboard,background", "train"]])
    config = load_config("configs/cavp_r50_single_plus.yaml", [f"data.root={root}", *SMALL])
    assert (config.data.dataset, config.audio.frontend, config.model.num_classes) == ("single_plus_cavp", "cavp", 23)
    names = class_names(config)
    assert len(names) == 24 and names[0] == "background" and names[23] == "typing_on_computer_keyboard"
    sample = build_dataset(config, "train")[0]
    assert sample.log_mel.shape == (1, 1, 300, 64) and sample.labels[0].tolist() == [23]
    torch.manual_seed(0)
    with torch.no_grad():
        out = build_model(config).eval()(frames=sample.frames[None], log_mel=sample.log_mel[None])
    assert out["semantic_logits"].shape == (1, 24, 64, 64)


def _chirp(samples: int, rate: int = 16000):
    import numpy as np

    t = np.arange(samples) / rate
    return (0.5 * np.sin(2 * np.pi * (200 + 1500 * t) * t)).astype(np.float32)


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_config_builds_runs_and_listens(path):
    config = load_config(path, SMALL)
    torch.manual_seed(0)
    model = build_model(config).eval()
    frames = 2
    inputs = random_inputs(config, batch=1, frames=frames)
    other_audio = {**inputs, "log_mel": torch.randn_like(inputs["log_mel"]) * 3}
    if "waveform" in inputs:
        other_audio["waveform"] = torch.from_numpy(_chirp(inputs["waveform"].shape[1]))[None]
    with torch.no_grad():
        out = model(**inputs)
        # zero-initialised residual gates (TPAVI's, the non-local blocks') hide the audio path at
        # initialisation: perturb every weight, then other audio must give other masks
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        listened = model(**inputs)
        heard = model(**other_audio)
    main = "semantic_logits" if "semantic_logits" in out else "pred_masks"  # dense models: TPAVI, CAVP
    assert torch.isfinite(out[main]).all() and torch.isfinite(heard[main]).all()
    # the output listens. Quantized models are left out: at random init every token snaps to the
    # same codeword whatever the audio (test_qsd_model.py checks their audio path part by part)
    if getattr(getattr(model, "baseline", model), "quantizer", None) is None:
        assert (listened[main] - heard[main]).abs().max() > 1e-4
    if "semantic_logits" in out:  # dense models: TPAVI, CAVP
        channels = 1 if config.model.num_classes == 1 else config.model.num_classes + 1
        assert out["semantic_logits"].shape[:2] == (frames, channels)
        if isinstance(model, TPAVI):
            assert out["semantic_logits"].shape == (frames, channels, 64, 64)
        return
    candidates = config.model.qsd.num_tokens * (config.model.qsd.num_sources if isinstance(model, SeparateThenSegment) else 1)
    assert out["pred_logits"].shape == (frames, candidates, config.model.num_classes)
    assert out["pred_masks"].shape == (frames, candidates, 16, 16)
    assert out["pred_boxes"].shape == (frames, candidates, 4)
    assert len(out["aux_outputs"]) == config.model.decoder_layers - 1


def test_each_ablation_row_changes_what_it_claims():
    def parts(row):
        model = build_model(load_config(f"configs/ablation/{row}.yaml", SMALL))
        core = model.baseline if isinstance(model, SeparateThenSegment) else model
        assert isinstance(core, QSD)
        present = {n for n in ("global_asd", "quantizer", "recombination", "local_asd") if getattr(core, n) is not None}
        return present, isinstance(model, SeparateThenSegment)

    assert parts("1_baseline") == (set(), False)
    assert parts("2_td") == (set(), True)
    assert parts("3_nonq_sd") == ({"global_asd"}, False)  # no codebook
    assert parts("4_q_sd") == ({"global_asd", "quantizer"}, False)
    assert parts("5_q_sd_avsr") == ({"global_asd", "quantizer", "recombination"}, False)
    assert parts("6_full") == ({"global_asd", "quantizer", "recombination", "local_asd"}, False)


@pytest.mark.parametrize("override, key", [
    ("model.name=detr", "model.name"), ("model.backbone=vgg", "model.backbone"),
    ("model.qsd.decomposition=maybe", "model.qsd.decomposition"), ("audio.encoder=wav2vec", "audio.encoder"),
])
def test_bad_model_settings_name_the_key(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        build_model(load_config("configs/qsd_r50_s4.yaml", SMALL + [override]))


def test_model_info_cli(capsys):
    assert main(["model-info", "configs/qsd_r50_ms3.yaml", *SMALL, "--random-init", "--frames", "2"]) == 0
    out = capsys.readouterr().out
    for fragment in ("backbone", "quantizer", "local_asd", "GFLOPs", "pred_masks: [2, 5, 16, 16]", "total"):
        assert fragment in out
    assert main(["model-info", "configs/qsd_r50_ms3.yaml", "model.backbone=vgg", "--random-init"]) == 2
    assert "model.backbone" in capsys.readouterr().err


def test_audio_tagging_head_exists_only_when_its_loss_is_on():
    from avseg.models.build import build_criterion

    plain_config = load_config("configs/cpu/qsd_r18_synth_avss.yaml", [*SMALL, "loss.audio_tagging=0",
                                                                       "model.extras.tag_gating=false"])
    plain = build_model(plain_config)
    assert plain.audio_tag_head is None
    assert "audio_tag_logits" not in plain(**random_inputs(plain_config, batch=1, frames=2))
    assert build_criterion(plain_config).audio_tagging == 0.0
    config = load_config("configs/cpu/qsd_r18_synth_avss.yaml", [*SMALL, "loss.audio_tagging=1.0",
                                                                 "model.extras.tag_gating=false"])
    out = build_model(config)(**random_inputs(config, batch=1, frames=2))
    assert out["audio_tag_logits"].shape == (2, config.model.num_classes)
    assert build_criterion(config).audio_tagging == 1.0


def test_qsd_paper_configs_evaluate_at_the_longest_side_and_tpavi_configs_square():
    for path in CONFIGS:
        if "/cpu/" in path:
            continue
        # TPAVI and CAVP evaluate as their authors' code does (square); QSD as its paper says
        expected = "square" if Path(path).stem.startswith(("tpavi", "cavp")) else "longest_side"
        assert load_config(path).data.resize == expected, path


def test_model_info_feeds_the_audio_of_the_configs_front_end(capsys):
    """Single+ with the CAVP front end hears 3 s per frame (`[C, 300, 64]`), not VGGish's 0.96 s."""
    small = ["data.image_size=64", "model.backbone=r18", "model.backbone_weights=", "model.cavp.audio_channels=2"]
    assert main(["model-info", "configs/cavp_r50_single_plus.yaml", *small, "--random-init", "--frames", "1"]) == 0
    assert "audio [2, 300, 64] per frame" in capsys.readouterr().out
    assert main(["model-info", "configs/qsd_r50_ms3.yaml", *SMALL, "--random-init", "--frames", "1"]) == 0
    assert "audio [96, 64] per frame" in capsys.readouterr().out
