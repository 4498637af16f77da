"""Where a forward pass spends its time, in ONNX Runtime and in eager PyTorch, per operator.

The profile behind docs/performance.md's "ONNX Runtime against eager PyTorch": the same model and
input as `avseg bench speed --runtime torch,onnx` (random weights, the shipped AVSS config with the
backbone swapped), one warm-up pass, then one profiled pass per runtime, on as many threads as
PyTorch uses (set OMP_NUM_THREADS=1 to match the benchmark).

    OMP_NUM_THREADS=1 python scripts/profile_runtimes.py --row qsd --backbone r50
    python scripts/profile_runtimes.py --row tpavi --backbone r50 --json runs/bench/profile_tpavi.json

Prints, per runtime, the wall time of the profiled pass and the operators that took the most time
(ONNX Runtime: node kernel time by op type; PyTorch: self CPU time by aten op); --json also writes
them.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path


def onnx_profile(path: Path, feeds: dict, threads: int, prefix: Path) -> tuple[float, dict[str, dict]]:
    """(wall ms of the profiled pass, {op type: {"ms", "calls"}}) of a second run in ONNX Runtime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: value for i, value in zip(session.get_inputs(), feeds.values())}
    session.run(None, feeds)  # warm-up
    started = time.perf_counter()
    session.run(None, feeds)
    wall = (time.perf_counter() - started) * 1e3
    events = json.loads(Path(session.end_profiling()).read_text())
    last_run = max(e["ts"] for e in events if e.get("name") == "model_run")
    ops: dict[str, dict] = collections.defaultdict(lambda: {"ms": 0.0, "calls": 0})
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= last_run:
            op = ops[event["args"].get("op_name", "?")]
            op["ms"] += event["dur"] / 1e3
            op["calls"] += 1
    return wall, dict(ops)


def torch_profile(model, inputs: dict) -> tuple[float, dict[str, dict]]:
    """(wall ms of the profiled pass, {aten op: {"ms", "calls"}}) by self CPU time, after a warm-up."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(**inputs)
        started = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(**inputs)
        wall = (time.perf_counter() - started) * 1e3
    ops = {e.key: {"ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in prof.key_averages()}
    return wall, ops


def table(name: str, wall: float, ops: dict[str, dict], top: int) -> str:
    total = sum(op["ms"] for op in ops.values()) or 1.0
    lines = [f"{name}: {wall:.0f} ms wall, {total:.0f} ms in operators"]
    for key, op in sorted(ops.items(), key=lambda item: -item[1]["ms"])[:top]:
        lines.append(f"  {key:<48}{op['ms']:10.1f} ms {100 * op['ms'] / total:5.1f} %  x{op['calls']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--row", default="qsd", help="a row of `avseg bench speed` with ONNX export (qsd, tpavi, ablation/...)")
    parser.add_argument("--backbone", default="r50")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--top", type=int, default=12, help="operators listed per runtime")
    parser.add_argument("--json", type=Path, help="also write both profiles here")
    args = parser.parse_args(argv)

    import torch

    from avseg.bench.speed import _build, _inputs, row_config
    from avseg.errors import UserError
    from avseg.inference.export import export_onnx

    try:
        config = row_config(args.row, args.backbone, args.image_size, [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _build(args.row, config, torch.device("cpu"))
            inputs = _inputs(args.row, config, args.frames, torch.device("cpu"))
            with tempfile.TemporaryDirectory(prefix="avseg-profile-") as tmp:
                path = export_onnx(model, config, Path(tmp) / "model.onnx", frames=args.frames)
                onnx = onnx_profile(path, {"frames": inputs["frames"].numpy(), "log_mel": inputs["log_mel"].numpy()},
                                    torch.get_num_threads(), Path(tmp) / "ort")
            eager = torch_profile(model, inputs)
    except UserError as error:
        print(f"profile_runtimes: {error}", file=sys.stderr)
        return 2
    what = f"{args.row} / {args.backbone}, {args.frames} frames at {args.image_size} px, {torch.get_num_threads()} thread(s)"
    print(what)
    print(table("onnxruntime", *onnx, args.top))
    print(table("torch (under the profiler)", *eager, args.top))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"what": what, "onnx": {"wall_ms": onnx[0], "ops": onnx[1]},
                                         "torch": {"wall_ms": eager[0], "ops": eager[1]}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
