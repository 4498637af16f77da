"""`avseg bench speed`: inference speed and memory of the backbone, QSD, every Table-2 row and TPAVI,
side by side in one run on one machine.

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

ROWS = (
    "backbone", "qsd", "ablation/1_baseline", "ablation/2_td", "ablation/3_nonq_sd", "ablation/4_q_sd",
    "ablation/5_q_sd_avsr", "ablation/6_full", "tpavi",
)


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


def row_config(row: str, backbone: str, image_size: int, overrides: list[str]) -> Config:
    """The config a row is measured with: the shipped AVSS configs (ResNet-50), backbone swapped."""
    if row not in ROWS:
        raise UserError(f"unknown bench row '{row}'; expected one of {', '.join(ROWS)}")
    path = {"backbone": "configs/qsd_r50_avss.yaml", "qsd": "configs/qsd_r50_avss.yaml",
            "tpavi": "configs/tpavi_r50_avss.yaml"}.get(row, f"configs/{row}.yaml")
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
    from avseg.models.info import random_inputs

    inputs = {k: v.to(device) for k, v in random_inputs(config, 1, frames).items()}
    if row == "backbone":
        return {"images": inputs["frames"].flatten(0, 1)}
    return inputs


def measure_row(row: str, backbone: str, *, device: str = "cpu", frames: int = 5, image_size: int = 224,
                repeats: int = 5, warmup: int = 1, overrides: list[str] = ()) -> SpeedRow:
    """Median time of one clip's forward pass (batch 1, `frames` frames) after `warmup` passes."""
    from avseg.models.info import count_gflops

    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here")
    config = row_config(row, backbone, image_size, list(overrides))
    torch.manual_seed(0)
    model = _build(row, config, torch_device)
    inputs = _inputs(row, config, frames, torch_device)
    gflops = count_gflops(model, inputs)
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch_device)
    times = []
    with torch.no_grad():
        for index in range(warmup + repeats):
            if torch_device.type == "cuda":
                torch.cuda.synchronize(torch_device)
            start = time.perf_counter()
            model(**inputs)
            if torch_device.type == "cuda":
                torch.cuda.synchronize(torch_device)
            if index >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return SpeedRow(row, backbone, device, frames, image_size, round(median, 2), round(1000 / median, 3),
                    round(peak_memory_mb(torch_device), 1), round(params, 2), round(gflops, 2))


def measure_isolated(row: str, backbone: str, **kwargs) -> SpeedRow:
    """`measure_row` in a fresh Python process (its own peak memory)."""
    request = {"row": row, "backbone": backbone, **kwargs}
    return SpeedRow(**run_worker("avseg.bench.speed", request, f"bench row {row} / {backbone}"))


def run_speed(backbones: list[str], rows: list[str], *, isolate: bool = True, progress=None, **kwargs) -> list[SpeedRow]:
    results = []
    for backbone in backbones:
        for row in rows:
            measure = measure_isolated if isolate else measure_row
            results.append(measure(row, backbone, **kwargs))
            if progress:
                progress(results[-1])
    return results


def format_speed_table(rows: list[SpeedRow]) -> str:
    header = f"{'model':<22}{'backbone':<9}{'device':<7}{'ms/clip':>10}{'clips/s':>9}{'x backbone':>11}" \
             f"{'peak MB':>9}{'params M':>10}{'GFLOPs':>9}"
    lines = [header]
    base = {r.backbone: r.ms_per_clip for r in rows if r.model == "backbone"}
    for r in rows:
        ratio = f"{r.ms_per_clip / base[r.backbone]:.2f}" if r.backbone in base else "-"
        lines.append(f"{r.model:<22}{r.backbone:<9}{r.device:<7}{r.ms_per_clip:>10.1f}{r.clips_per_s:>9.2f}"
                     f"{ratio:>11}{r.peak_mem_mb:>9.0f}{r.params_m:>10.2f}{r.gflops:>9.1f}")
    return "\n".join(lines)


def speed_json(rows: list[SpeedRow]) -> dict:
    return {"rows": [asdict(r) for r in rows]}


if __name__ == "__main__":  # worker of measure_isolated
    worker_main(lambda request: measure_row(request.pop("row"), request.pop("backbone"), **request))
