"""The GPU branches on the CPU: bf16 autocast in training and evaluation steps, torch.compile
(inductor, with the machine's C compiler), the fp16 GradScaler's logic, and the --amp / --compile
options of `avseg train` and `avseg eval` (avseg.engine.precision)."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from avseg.bench.train import bench_config, synthetic_batch
from avseg.cli import main
from avseg.engine.evaluate import evaluate, evaluation_loader
from avseg.engine.precision import amp_dtype, autocast, c_compiler, compile_model, grad_scaler
from avseg.engine.step import compute_losses, forward_batch
from avseg.errors import UserError
from avseg.models.build import build_criterion, build_model

pytestmark = pytest.mark.timeout(600)
AVSS = "configs/cpu/qsd_r18_synth_avss.yaml"
TINY = ["model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.decoder_layers=1",
        "model.encoder_layers=1", "model.qsd.asd_layers=1", "model.qsd.num_tokens=3", "model.quantizer.codebook_size=16"]
LOSS_RTOL = 0.02  # bf16 autocast against fp32, same model, same batch: every loss term
METRIC_ATOL = 0.02  # bf16 autocast against fp32 evaluation, same model, same clips: the main metric
COMPILE_ATOL = 1e-4  # torch.compile (inductor, fp32) against eager: every output


def _tiny(size: int = 64):
    config = bench_config(AVSS, size, TINY)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(config)
    return model, config


def _step(model, criterion, batch, dtype):
    """One training step's losses and the gradient norm under autocast(cpu, dtype)."""
    model.train()
    with autocast("cpu", dtype):
        losses = compute_losses(forward_batch(model, batch), batch, criterion, class_agnostic=False)
    losses["loss_total"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return {k: float(v.detach()) for k, v in losses.items() if k.startswith("loss")}, float(torch.norm(torch.stack(
        [g.float().norm() for g in grads])))


def test_bf16_training_step_on_the_cpu_is_finite_and_close_to_fp32():
    model, config = _tiny()
    criterion = build_criterion(config)
    batch = synthetic_batch(config, 2, torch.Generator().manual_seed(0))
    reference, ref_norm = _step(copy.deepcopy(model), criterion, batch, None)
    bf16_model = copy.deepcopy(model)
    mixed, norm = _step(bf16_model, criterion, batch, torch.bfloat16)
    assert set(mixed) == set(reference) and len(mixed) >= 5
    for key, value in mixed.items():
        assert math.isfinite(value), key
        assert value == pytest.approx(reference[key], rel=LOSS_RTOL, abs=1e-3), key
    assert math.isfinite(norm) and norm == pytest.approx(ref_norm, rel=0.1)
    # autocast really ran in bf16: the convolutions' outputs inside it are bfloat16
    with autocast("cpu", torch.bfloat16):
        assert bf16_model.backbone(batch.frames[:, 0])[0].dtype == torch.bfloat16


def test_bf16_evaluation_matches_fp32_within_tolerance(ms3_root, tpavi_config, tmp_path):
    config = tpavi_config(ms3_root, tmp_path)
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():  # untrained TPAVI: logits centred on 0, so about half the pixels are foreground
        model.head[-1].bias.zero_()
    loader = evaluation_loader(config, "train")
    full = evaluate(model, loader, config, split="train")
    config.train.amp = "bf16"
    mixed = evaluate(model, loader, config, split="train")
    assert mixed["num_clips"] == full["num_clips"] == 6
    assert 0.0 < full["j"] and math.isfinite(mixed["j"])
    assert mixed["j"] == pytest.approx(full["j"], abs=METRIC_ATOL)
    assert mixed["f"] == pytest.approx(full["f"], abs=METRIC_ATOL)


def test_fp16_stays_cuda_only_and_its_scaler_logic_runs_on_the_cpu():
    with pytest.raises(UserError, match="fp16 runs on CUDA only"):
        amp_dtype("fp16", "cpu")
    assert amp_dtype("bf16", "cpu") is torch.bfloat16 and amp_dtype("none", "cpu") is None
    assert not grad_scaler("cpu", torch.bfloat16).is_enabled()  # bf16 needs no scaler
    # The scaler's logic, on the CPU's own GradScaler: scale, skip the step on an inf, back off, grow.
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=1)
    assert scaler.is_enabled()
    scaler.scale(parameter.sum() * float("inf")).backward()
    scaler.step(optimizer)
    scaler.update()
    assert torch.equal(parameter.detach(), torch.ones(3)) and scaler.get_scale() == 2.0 ** 7  # skipped, halved
    optimizer.zero_grad()
    scaler.scale(parameter.sum()).backward()
    assert torch.allclose(parameter.grad, torch.full((3,), 2.0 ** 7))  # scaled gradient
    scaler.step(optimizer)
    scaler.update()
    assert torch.allclose(parameter.detach(), torch.full((3,), 0.9)) and scaler.get_scale() == 2.0 ** 8  # unscaled step, grown


@pytest.mark.skipif(c_compiler() is None, reason="torch.compile (inductor) on the CPU builds C++: no C compiler "
                                                  "(cc, gcc, clang) on the PATH")
def test_compiled_deformable_encoder_layer_gives_the_eager_outputs():
    """Inductor on the CPU compiles the model's own attention (the deformable encoder layer, with
    its embedding_bag sampling) at tiny size and gives eager's outputs."""
    from avseg.models.encoder import DeformableEncoderLayer, encoder_reference_points

    torch.manual_seed(0)
    shapes = [(4, 4), (2, 2), (1, 1)]
    layer = DeformableEncoderLayer(16, 3, 2, 2, 32, 0.0).eval()
    tokens = sum(h * w for h, w in shapes)
    src, pos = torch.randn(2, tokens, 16), torch.randn(1, tokens, 16)
    reference = encoder_reference_points(shapes, 1, "cpu", torch.float32)
    with torch.no_grad():
        eager = layer(src, pos, reference, shapes)
        compiled = compile_model(layer, "cpu")(src, pos, reference, shapes)
    assert compiled.shape == eager.shape and eager.abs().max() > 0.1
    assert (compiled - eager).abs().max() <= COMPILE_ATOL


def test_compile_without_a_c_compiler_is_one_clear_error(monkeypatch):
    monkeypatch.setattr("avseg.engine.precision.shutil.which", lambda name: None)
    with pytest.raises(UserError, match="no C compiler"):
        compile_model(torch.nn.Linear(2, 2), "cpu")


def test_train_and_eval_accept_amp_and_compile(monkeypatch, ms3_root, qsd_config, tmp_path, capsys):
    import json

    import avseg.engine.train_cli as train_cli
    from avseg.engine.checkpoint import save_checkpoint

    seen = {}

    def fake_train(config, resume=None, **_options):
        seen["config"] = config
        return {"steps": 0, "epochs": 0, "output_dir": str(tmp_path), "best_metric": None}

    monkeypatch.setattr(train_cli, "train", fake_train)
    assert main(["train", AVSS, f"output_dir={tmp_path}", "--amp", "bf16", "--compile"]) == 0
    assert seen["config"].train.amp == "bf16" and seen["config"].train.compile is True
    # avseg eval --amp bf16 on the CPU: runs under autocast and writes its metrics
    config = qsd_config(ms3_root, tmp_path / "run")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "model.pt", model=build_model(config).eval(), config=config, step=0)
    overrides = [f"data.root={ms3_root}", "data.image_size=32", "data.num_workers=0"]
    assert main(["eval", "configs/cpu/qsd_r18_synth_ms3.yaml", *overrides, "--checkpoint", str(tmp_path / "model.pt"),
                 "--split", "train", "--out", str(tmp_path / "eval"), "--amp", "bf16"]) == 0
    assert 0.0 <= json.loads((tmp_path / "eval/metrics.json").read_text())["j"] <= 1.0
    code = main(["eval", "configs/cpu/qsd_r18_synth_ms3.yaml", *overrides, "--checkpoint", str(tmp_path / "model.pt"),
                 "--amp", "fp16"])
    assert code == 2 and "fp16 runs on CUDA only" in capsys.readouterr().err
