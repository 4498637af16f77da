"""`avseg export`: a model (trained checkpoint, or a config with random weights) as an ONNX graph,
verified with ONNX Runtime against PyTorch before the command says it is done.

    avseg export --checkpoint runs/qsd/best.pt --onnx qsd.onnx              # T = 5 frames, the config's size
    avseg export configs/qsd_r50_avss.yaml --random-init --onnx qsd.onnx    # untrained: speed runs only

The graph (`OPSET`):
    inputs   frames  float32 [B, T, 3, S, S] (ImageNet-normalised RGB, as `Predictor` prepares it)
             log_mel float32 [B, T, 96, 64]  (one VGGish log-mel example per frame)
    outputs  QSD:   pred_logits [B*T, K, C], pred_boxes [B*T, K, 4], pred_masks [B*T, K, S/4, S/4]
             TPAVI: semantic_logits [B*T, O, S, S]
B is dynamic; T and S are fixed at export (QSD's attention layers trace T into their reshapes).
The model's config, class names, T and S are stored in the graph's metadata, so that
`avseg predict --runtime onnx MODEL.onnx` needs nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from avseg import __version__
from avseg.config import OVERRIDE_PATTERN, Config, config_to_dict, load_config
from avseg.errors import UserError

OPSET = 17
INPUT_NAMES = ("frames", "log_mel")
QSD_OUTPUTS = ("pred_logits", "pred_boxes", "pred_masks")
TPAVI_OUTPUTS = ("semantic_logits",)
TOLERANCE = 1e-3  # max abs difference of every output, ONNX Runtime against PyTorch
META_PREFIX = "avseg."


def output_names(model: nn.Module) -> tuple[str, ...]:
    """The graph outputs of `model`; UserError naming what cannot be exported."""
    from avseg.models.qsd import QSD
    from avseg.models.separation import SeparateThenSegment
    from avseg.models.tpavi import TPAVI

    if isinstance(model, SeparateThenSegment):
        raise UserError("cannot export Table 2 row 2 (TD, model.qsd.separator): its audio separator "
                        f"({type(model.separator).__name__}) runs on the CPU outside the network (NumPy / "
                        "scikit-learn NMF) and has no ONNX form; export the rows without a separator")
    if isinstance(model, TPAVI):
        return TPAVI_OUTPUTS
    if isinstance(model, QSD):
        return QSD_OUTPUTS
    raise UserError(f"cannot export a {type(model).__name__}: avseg export knows QSD and TPAVI")


class ExportGraph(nn.Module):
    """`model(frames, log_mel)` with its dict outputs as a tuple in `names` order (all frames present)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, frames: Tensor, log_mel: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model(frames, log_mel)
        return tuple(outputs[name] for name in self.names)


def _expm1(g, x):
    """ONNX has no Expm1: exp(x) - 1, and x + x^2/2 + x^3/6 for |x| < 0.01 (where exp(x) - 1 would
    lose the low digits in float32; the series' error there is below 5e-10 relative)."""
    const = lambda value: g.op("Constant", value_t=torch.tensor(value, dtype=torch.float32))  # noqa: E731
    series = g.op("Add", x, g.op("Mul", g.op("Mul", x, x), g.op("Add", const(0.5), g.op("Mul", x, const(1 / 6)))))
    small = g.op("Less", g.op("Abs", x), const(0.01))
    return g.op("Where", small, series, g.op("Sub", g.op("Exp", x), const(1.0)))


def _log_sigmoid(g, x):
    """-softplus(-x): the exporter's own form, log(sigmoid(x)), is -inf below about -88 (the class
    gate of QSD sums two log-sigmoids of saturated scores)."""
    return g.op("Neg", g.op("Softplus", g.op("Neg", x)))


def export_onnx(model: nn.Module, config: Config, out: str | Path, *, frames: int = 5,
                class_names: list[str] | None = None, random_init: bool = False) -> Path:
    """Trace `model` (eval mode, batch 1 example) into `out`; store config and names in its metadata."""
    import onnx

    names = output_names(model)
    if frames < 1:
        raise UserError(f"--frames {frames}: must be at least 1")
    size = config.data.image_size
    graph = ExportGraph(model, names).eval()
    example = (torch.zeros(1, frames, 3, size, size), torch.zeros(1, frames, 96, 64))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1, OPSET)
    torch.onnx.register_custom_op_symbolic("aten::log_sigmoid", _log_sigmoid, OPSET)
    dynamic = {name: {0: "batch"} for name in INPUT_NAMES}
    dynamic.update({name: {0: "batch_x_frames"} for name in names})
    # Not under no_grad: nn.MultiheadAttention would take its fused fast path, which has no ONNX form.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape arithmetic, deprecation of the TorchScript path
        try:
            torch.onnx.export(graph, example, str(out), dynamo=False, opset_version=OPSET,
                              input_names=list(INPUT_NAMES), output_names=list(names), dynamic_axes=dynamic)
        except torch.onnx.errors.UnsupportedOperatorError as err:
            raise UserError(f"{out}: not written: {str(err).splitlines()[0]} (a part of this "
                            f"{type(model).__name__} that avseg export does not support)") from None
    model.eval()
    proto = onnx.load(str(out))
    meta = {"version": __version__, "config": json.dumps(config_to_dict(config)), "frames": str(frames),
            "image_size": str(size), "outputs": ",".join(names), "random_init": str(bool(random_init)).lower(),
            "class_names": json.dumps(list(class_names) if class_names else None), "opset": str(OPSET)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value
    onnx.save(proto, str(out))
    return out


def synthetic_inputs(config: Config, frames: int, clips: int, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """`clips` rendered synthetic clips (objects with their sounds, `avseg.data.synth`) prepared as
    `Predictor` prepares video frames: (frames `[1, T, 3, S, S]`, log_mel `[1, T, 96, 64]`)."""
    from PIL import Image

    from avseg.audio.logmel import MIN_SAMPLES_PER_EXAMPLE, SAMPLE_RATE, vggish_log_mel
    from avseg.data.synth.classes import build_class_bank
    from avseg.data.synth.config import SynthConfig
    from avseg.data.synth.scene import synthesize_clip
    from avseg.data.transforms import resize_square, to_normalized_tensor

    synth = SynthConfig(image_size=config.data.image_size)
    bank = build_class_bank(seed, max(config.model.num_classes, synth.objects[1]))
    result = []
    for index in range(clips):
        clip = synthesize_clip(synth, bank, (seed, index), frames, multi_source=bool(index % 2))
        images = torch.stack([to_normalized_tensor(resize_square(Image.fromarray(f), config.data.image_size))
                              for f in clip.frames])
        mels = np.stack([vggish_log_mel(clip.waveform[t * SAMPLE_RATE : t * SAMPLE_RATE + MIN_SAMPLES_PER_EXAMPLE],
                                        SAMPLE_RATE, num_examples=1)[0] for t in range(frames)])
        result.append((images[None], torch.from_numpy(mels)[None]))
    return result


@dataclass
class Check:
    """One verification run: the inputs and each output's max abs difference (ONNX Runtime - PyTorch)."""

    inputs: str
    batch: int
    max_abs_diff: dict[str, float]

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())


def verify_onnx(model: nn.Module, config: Config, path: str | Path, *, frames: int, real_clips: int = 2,
                seed: int = 0) -> list[Check]:
    """Run the graph in ONNX Runtime on random inputs (batch 1 and 2) and on rendered synthetic
    clips (batched), against the PyTorch model on the same inputs."""
    from avseg.inference.onnx_runtime import OnnxModel

    runtime = OnnxModel(path)
    names = output_names(model)
    generator = torch.Generator().manual_seed(seed)
    size = config.data.image_size
    cases = [(f"random, batch {b}", torch.randn(b, frames, 3, size, size, generator=generator),
              torch.randn(b, frames, 96, 64, generator=generator) * 3 - 3) for b in (1, 2)]
    if real_clips:
        clips = synthetic_inputs(config, frames, real_clips, seed)
        cases.append((f"{real_clips} synthetic clips (rendered scenes with their sounds)",
                      torch.cat([c[0] for c in clips]), torch.cat([c[1] for c in clips])))
    checks = []
    model.eval()
    for label, images, mels in cases:
        with torch.no_grad():
            expected = model(images, mels)
        got = runtime.run_graph(images.numpy(), mels.numpy())
        diffs = {name: float(np.abs(got[name] - expected[name].float().numpy()).max()) for name in names}
        checks.append(Check(label, images.shape[0], diffs))
    return checks


def format_checks(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        diffs = ", ".join(f"{name} {value:.2e}" for name, value in check.max_abs_diff.items())
        verdict = "ok" if check.worst <= TOLERANCE else f"FAILED (> {TOLERANCE:g})"
        lines.append(f"  {check.inputs}: max |onnx - torch|: {diffs}: {verdict}")
    return "\n".join(lines)


# command line ----------------------------------------------------------------------------------


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", type=Path, help="a config (with --random-init); or use --checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (with a config)")
    parser.add_argument("--checkpoint", type=Path, help="a trained avseg checkpoint")
    parser.add_argument("--random-init", action="store_true",
                        help="with a config: export an UNTRAINED model (random weights; speed runs only)")
    parser.add_argument("--onnx", required=True, type=Path, metavar="OUT.onnx", help="the graph to write")
    parser.add_argument("--frames", type=int, default=5, help="T, frames per clip, fixed in the graph (default 5)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="S, frame side in pixels, fixed in the graph (default: the config's data.image_size)")
    parser.add_argument("--verify-clips", type=int, default=2,
                        help="rendered synthetic clips to verify on, besides random inputs (default 2; 0: none)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check (not recommended)")
    parser.add_argument("--json", type=Path, help="write the verification as JSON")


def load_model(args: argparse.Namespace) -> tuple[nn.Module, Config, list[str] | None, bool]:
    """(model in eval mode, config, class names, random_init) from --checkpoint or a config."""
    from avseg.models.build import build_model

    size = [f"data.image_size={args.image_size}"] if args.image_size else []
    if args.checkpoint is not None:
        if args.config is not None or args.overrides or args.random_init:
            raise UserError("--checkpoint rebuilds the model from its stored config: give no config, overrides "
                            "or --random-init with it")
        from avseg.engine.checkpoint import model_from_checkpoint

        model, config, checkpoint = model_from_checkpoint(args.checkpoint)
        if args.image_size and args.image_size != config.data.image_size:
            if config.model.backbone == "swint":
                raise UserError(f"{args.checkpoint}: Swin-T is built for {config.data.image_size} px; "
                                f"--image-size {args.image_size} would change its attention windows")
            config.data.image_size = args.image_size
        return model, config, checkpoint.get("class_names"), False
    if args.config is None:
        raise UserError("no model: give --checkpoint CKPT, or a CONFIG with --random-init")
    for item in args.overrides:
        if not OVERRIDE_PATTERN.match(item):
            raise UserError(f"{item}: expected a dotted config override KEY=VALUE")
    if not args.random_init:
        raise UserError(f"{args.config} builds an untrained model: add --random-init to export it anyway "
                        "(its outputs are meaningless) or give --checkpoint")
    config = load_config(args.config, [*args.overrides, *size, "model.backbone_weights=", "audio.vggish_weights="])
    torch.manual_seed(config.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(config)
    return model.eval(), config, None, True


def run_cli(args: argparse.Namespace) -> int:
    model, config, class_names, random_init = load_model(args)
    output_names(model)  # unsupported models stop here, before any work
    path = export_onnx(model, config, args.onnx, frames=args.frames, class_names=class_names, random_init=random_init)
    size = config.data.image_size
    print(f"wrote {path} (opset {OPSET}; inputs frames [B, {args.frames}, 3, {size}, {size}], "
          f"log_mel [B, {args.frames}, 96, 64]; outputs {', '.join(output_names(model))}; B dynamic)", flush=True)
    if args.no_verify:
        print("not verified (--no-verify)")
        return 0
    checks = verify_onnx(model, config, path, frames=args.frames, real_clips=args.verify_clips)
    print(f"ONNX Runtime against PyTorch (tolerance {TOLERANCE:g}):\n{format_checks(checks)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"onnx": str(path), "opset": OPSET, "tolerance": TOLERANCE,
                                         "checks": [asdict(c) for c in checks]}, indent=1) + "\n")
    failed = [c for c in checks if c.worst > TOLERANCE]
    if failed:
        print(f"avseg export: {path}: {len(failed)} check(s) differ from PyTorch by more than {TOLERANCE:g}",
              file=sys.stderr)
        return 1
    return 0
