"""`avseg bench speed`: inference speed and memory of the backbone, QSD, every Table-2 row, TPAVI
and CAVP, side by side in one run on one machine (CAVP only on ResNet backbones; no ONNX row).

Each row is measured in its own subprocess (unless `isolate=False`), so its peak memory is its
own: on CUDA `torch.cuda.max_memory_allocated`, on the CPU the peak resident set size of that
process (which includes the Python interpreter and the imported libraries, about 0.4-0.5 GB).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from avseg.bench.common import peak_memory_mb, run_worker, worker_main
from avseg.config import Config, load_config
from avseg.errors import UserError
from avseg.models.cavp_parts import RESNETS

ROWS = (
    "backbone", "qsd", "ablation/1_baseline", "ablation/2_td", "ablation/3_nonq_sd", "ablation/4_q_sd",
    "ablation/5_q_sd_avsr", "ablation/6_full", "tpavi", "cavp",
)
RUNTIMES = ("torch", "onnx")
# the bare backbone is not an avseg model; TD's separator has no ONNX form; avseg export does not know CAVP
NO_ONNX = ("backbone", "ablation/2_td", "cavp")


@dataclass
class SpeedRow:
    model: str
    backbone: str
    device: str
    frames: int
    image_size: int
    ms_per_clip: float
    clips_per_s: float
    peak_mem_mb: float
    params_m: float
    gflops: float
    runtime: str = "torch"
    threads: int = 0  # intra-op threads (torch.get_num_threads(); ONNX Runtime's intra_op_num_threads)
    max_abs_diff: float | None = None  # onnx rows: max |onnx - torch| over the outputs, on the timed input


def row_config(row: str, backbone: str, image_size: int, overrides: list[str]) -> Config:
    """The config a row is measured with: the shipped AVSS configs (ResNet-50), backbone swapped."""
    if row not in ROWS:
        raise UserError(f"unknown bench row '{row}'; expected one of {', '.join(ROWS)}")
    path = {"backbone": "configs/qsd_r50_avss.yaml", "qsd": "configs/qsd_r50_avss.yaml",
            "tpavi": "configs/tpavi_r50_avss.yaml", "cavp": "configs/cavp_r50_avss.yaml"}.get(row, f"configs/{row}.yaml")
    fixed = [f"model.backbone={backbone}", "model.backbone_weights=", "audio.vggish_weights=",
             f"data.image_size={image_size}"]
    return load_config(path, fixed + list(overrides))


def _build(row: str, config: Config, device: torch.device):
    import warnings

    from avseg.models.backbones import Backbone
    from avseg.models.build import build_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="VGGish has no weights")
        if row == "backbone":
            model = Backbone(config.model.backbone, image_size=config.data.image_size)
        else:
            model = build_model(config)
    model = model.to(device).eval()
    return model


def _inputs(row: str, config: Config, frames: int, device: torch.device) -> dict:
    from avseg.inference.audio_input import audio_rule
    from avseg.models.info import random_inputs

    shape = audio_rule(config).input_shape
    inputs = {k: v.to(device) for k, v in random_inputs(config, 1, frames, shape).items()}
    if row == "backbone":
        return {"images": inputs["frames"].flatten(0, 1)}
    return inputs


def _onnx_forward(model, config: Config, inputs: dict, frames: int):
    """Export `model` to a temporary graph; (a call running it in ONNX Runtime, max |onnx - torch|)."""
    import tempfile
    from pathlib import Path

    from avseg.inference.export import export_onnx, output_names
    from avseg.inference.onnx_runtime import OnnxModel

    with tempfile.TemporaryDirectory(prefix="avseg-bench-") as tmp:
        path = export_onnx(model, config, Path(tmp) / "model.onnx", frames=frames)
        runtime = OnnxModel(path, intra_op_threads=torch.get_num_threads())  # the session holds the graph
    images, mels = inputs["frames"].numpy(), inputs["log_mel"].numpy()
    with torch.no_grad():
        expected = model(**inputs)
    got = runtime.run_graph(images, mels)
    diff = max(float(abs(got[n] - expected[n].numpy()).max()) for n in output_names(model))
    return (lambda: runtime.run_graph(images, mels)), diff


def measure_row(row: str, backbone: str, *, device: str = "cpu", frames: int = 5, image_size: int = 224,
                repeats: int = 5, warmup: int = 1, overrides: list[str] = (),
                runtimes: list[str] = ("torch",)) -> list[SpeedRow]:
    """Median time of one clip's forward pass (batch 1, `frames` frames) after `warmup` passes, one
    row per runtime.

    runtime "onnx": the model exported by `avseg export` and run by ONNX Runtime (CPU) with as many
    threads as PyTorch uses; the row also records max |onnx - torch| on the timed input. With both
    runtimes the passes alternate (torch, onnx, torch, ...) on the same model and input, so that
    load from other processes falls on both alike; their peak memory is then the same process's."""
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            raise UserError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    if "onnx" in runtimes and (device != "cpu" or row in NO_ONNX):
        raise UserError(f"--runtime onnx: not for the {row} row on {device} (ONNX rows: CPU, avseg models without a separator)")
    from avseg.models.info import count_gflops

    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here")
    config = row_config(row, backbone, image_size, list(overrides))
    torch.manual_seed(0)
    model = _build(row, config, torch_device)
    inputs = _inputs(row, config, frames, torch_device)
    gflops = count_gflops(model, inputs)
    forwards, diffs = {"torch": lambda: model(**inputs)}, {"torch": None}
    if "onnx" in runtimes:
        forwards["onnx"], diffs["onnx"] = _onnx_forward(model, config, inputs, frames)
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch_device)
    times: dict[str, list[float]] = {runtime: [] for runtime in runtimes}
    with torch.no_grad():
        for index in range(warmup + repeats):
            for runtime in runtimes:
                if torch_device.type == "cuda":
                    torch.cuda.synchronize(torch_device)
                start = time.perf_counter()
                forwards[runtime]()
                if torch_device.type == "cuda":
                    torch.cuda.synchronize(torch_device)
                if index >= warmup:
                    times[runtime].append((time.perf_counter() - start) * 1000)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    peak = round(peak_memory_mb(torch_device), 1)
    rows = []
    for runtime in runtimes:
        median = statistics.median(times[runtime])
        diff = diffs[runtime]
        rows.append(SpeedRow(row, backbone, device, frames, image_size, round(median, 2), round(1000 / median, 3),
                             peak, round(params, 2), round(gflops, 2), runtime, torch.get_num_threads(),
                             None if diff is None else float(f"{diff:.3g}")))
    return rows


def measure_isolated(row: str, backbone: str, **kwargs) -> list[SpeedRow]:
    """`measure_row` in a fresh Python process (its own peak memory)."""
    request = {"row": row, "backbone": backbone, **kwargs}
    result = run_worker("avseg.bench.speed", request, f"bench row {row} / {backbone}")
    return [SpeedRow(**item) for item in result["rows"]]


def run_speed(backbones: list[str], rows: list[str], *, isolate: bool = True, progress=None,
              runtimes: list[str] = ("torch",), **kwargs) -> list[SpeedRow]:
    """Every (backbone, row, runtime); the onnx runtime skips the rows it cannot run (`NO_ONNX`)."""
    results = []
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            raise UserError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    for backbone in backbones:
        for row in rows:
            if row == "cavp" and backbone not in RESNETS:  # CAVP's DeepLabV3+ needs a dilated ResNet
                continue
            wanted = [r for r in runtimes if not (r == "onnx" and row in NO_ONNX)]
            measure = measure_isolated if isolate else measure_row
            for result in measure(row, backbone, runtimes=wanted, **kwargs):
                results.append(result)
                if progress:
                    progress(result)
    return results


def format_speed_table(rows: list[SpeedRow]) -> str:
    """One line per row; with ONNX rows also the runtime, the speed-up over the same model in
    PyTorch (`x torch`, clips/s over clips/s) and max |onnx - torch|."""
    onnx = any(r.runtime == "onnx" for r in rows)
    header = f"{'model':<22}{'backbone':<9}{'device':<7}" + (f"{'runtime':<8}" if onnx else "") + \
        f"{'ms/clip':>10}{'clips/s':>9}{'x backbone':>11}" + (f"{'x torch':>8}{'max diff':>10}" if onnx else "") + \
        f"{'peak MB':>9}{'params M':>10}{'GFLOPs':>9}"
    lines = [header]
    base = {r.backbone: r.ms_per_clip for r in rows if r.model == "backbone" and r.runtime == "torch"}
    eager = {(r.model, r.backbone): r.clips_per_s for r in rows if r.runtime == "torch"}
    for r in rows:
        ratio = f"{r.ms_per_clip / base[r.backbone]:.2f}" if r.backbone in base else "-"
        line = f"{r.model:<22}{r.backbone:<9}{r.device:<7}" + (f"{r.runtime:<8}" if onnx else "")
        line += f"{r.ms_per_clip:>10.1f}{r.clips_per_s:>9.2f}{ratio:>11}"
        if onnx:
            speedup = eager.get((r.model, r.backbone))
            speedup = f"{r.clips_per_s / speedup:.2f}" if speedup and r.runtime == "onnx" else "-"
            line += f"{speedup:>8}{'-' if r.max_abs_diff is None else f'{r.max_abs_diff:.1e}':>10}"
        lines.append(line + f"{r.peak_mem_mb:>9.0f}{r.params_m:>10.2f}{r.gflops:>9.1f}")
    return "\n".join(lines)


def speed_json(rows: list[SpeedRow]) -> dict:
    return {"rows": [asdict(r) for r in rows]}


if __name__ == "__main__":  # worker of measure_isolated
    worker_main(lambda request: {"rows": [asdict(r) for r in measure_row(request.pop("row"), request.pop("backbone"),
                                                                         **request)]})
