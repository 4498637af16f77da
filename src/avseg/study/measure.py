"""What a study measures on one trained run, on the test split (docs/study.md, "Columns").

- AVSS mIoU and F (the official semantic metric) and the binary J and F of the same clips (the
  MS3 view: sounding vs background, F on the foreground probability as `avseg eval` computes it);
- the same model with shuffled audio (each clip hears another clip's audio);
- object level, from the synthetic benchmark's per-object extras: recall of sounding objects and
  false-positive rate on visible silent objects, per frame, split by the number of simultaneous
  sources (1 / 2 / 3+) and by whether an off-screen sound is heard in that second;
- codebook perplexity (global and local codes) of the quantized rows, and how many different
  K-tuples of codes the test clips (global) and frames (local) received ("code sets": 1 = every
  clip gets the same codewords whatever it sounds like);
- optionally the global semantic tokens of every clip, for the t-SNE of `avseg.study.tsne`.

An object is "found" when at least half of its visible pixels carry its class in the prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avseg.config import Config
from avseg.data.build import class_names
from avseg.engine.baselines import shuffled_audio_batch
from avseg.engine.evaluate import TaskMetric, evaluation_loader, predict
from avseg.engine.step import forward_batch, unwrap_model
from avseg.errors import UserError
from avseg.metrics import AVSBenchMetric
from avseg.models.postprocess import foreground_probability

FOUND_SHARE = 0.5
SOURCE_BUCKETS = ("1", "2", "3+")


class ObjectTally:
    """Counts of found / total sounding and silent objects, per bucket."""

    def __init__(self):
        self.counts: dict[str, list[int]] = {}

    def add(self, key: str, found: bool) -> None:
        entry = self.counts.setdefault(key, [0, 0])
        entry[0] += int(found)
        entry[1] += 1

    def rates(self) -> dict[str, float | None]:
        return {key: (found / total if total else None) for key, (found, total) in sorted(self.counts.items())}

    def totals(self) -> dict[str, int]:
        return {key: total for key, (_, total) in sorted(self.counts.items())}


def _bucket(sources: int) -> str:
    return "3+" if sources >= 3 else str(sources)


def object_outcomes(ids: Tensor, labelled: Tensor, extras: dict, size: tuple[int, int], tally: ObjectTally) -> None:
    """Add one clip's objects to `tally`: `ids` `[T, H, W]` predicted class ids of its slots, the
    frames where `labelled` `[T]` is True are counted.

    extras: the clip's `_synth/clips/*.npz` arrays (instances `[T, h, w]`, class_ids `[N]`,
    sounding `[N, T]`, offscreen_sounding `[T]`).
    """
    instances = torch.from_numpy(extras["instances"].astype(np.int64))
    instances = F.interpolate(instances[:, None].float(), size=size, mode="nearest")[:, 0].long()
    class_ids, sounding = extras["class_ids"].astype(np.int64), extras["sounding"].astype(bool)
    offscreen = extras.get("offscreen_sounding", np.zeros(sounding.shape[1], bool)).astype(bool)
    for t in range(min(ids.shape[0], instances.shape[0])):
        if not bool(labelled[t]):
            continue
        sources = int(sounding[:, t].sum())
        heard = "offscreen" if offscreen[t] else "no_offscreen"
        for i, class_id in enumerate(class_ids):
            pixels = instances[t] == i + 1
            area = int(pixels.sum())
            if area == 0:
                continue
            found = int((ids[t][pixels] == int(class_id)).sum()) >= FOUND_SHARE * area
            if sounding[i, t]:
                tally.add(f"recall/sources_{_bucket(sources)}", found)
                tally.add(f"recall/{heard}", found)
                tally.add("recall/all", found)
            else:
                tally.add(f"fpr/sources_{_bucket(sources) if sources else '0'}", found)
                tally.add(f"fpr/{heard}", found)
                tally.add("fpr/all", found)


def _perplexity(counts: np.ndarray) -> float | None:
    total = counts.sum()
    if total == 0:
        return None
    p = counts[counts > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


class TokenRecorder:
    """Keeps the global semantic tokens `[B, K, C]` of every forward call (a forward hook)."""

    def __init__(self, model: nn.Module):
        inner = unwrap_model(model)
        self.tokens: list[np.ndarray] = []
        self.handle = inner.global_asd.register_forward_hook(self._keep) if hasattr(inner, "global_asd") else None

    def _keep(self, _module, _inputs, output) -> None:
        self.tokens.append(output.detach().float().cpu().numpy())

    def take(self) -> np.ndarray | None:
        if not self.tokens:
            return None
        out = np.concatenate(self.tokens)
        self.tokens = []
        return out

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()


def _clip_sources(extras: dict) -> list[int]:
    return sorted(int(c) for c, s in zip(extras["class_ids"], extras["sounding"]) if bool(np.any(s)))


def _load_extras(synth_root: Path, clip_id: str) -> dict:
    path = synth_root / "_synth" / "clips" / f"{clip_id}.npz"
    if not path.is_file():
        raise UserError(f"{path}: missing; study measurements need data written by avseg synth")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@torch.no_grad()
def data_baselines(config: Config, synth_root: str | Path, split: str = "test") -> dict[str, float]:
    """mIoU of the trivial answers on the same clips: nothing segmented ("all_background") and every
    visible object segmented with its class, sounding or not ("every_object": a perfect segmenter
    that ignores the audio)."""
    from avseg.engine.baselines import every_object_ids

    names = len(class_names(config))
    metrics = {name: TaskMetric("semantic", names, 5) for name in ("all_background", "every_object")}
    for batch, _damaged in evaluation_loader(config, split):
        if batch is None:
            continue
        size = tuple(batch.semantic.shape[-2:])
        ids = every_object_ids(Path(synth_root), batch.clip_ids, batch.frames.shape[1], size, False)
        metrics["every_object"].update(batch, {"ids": ids})
        metrics["all_background"].update(batch, {"ids": torch.zeros_like(ids)})
    return {name: float(metric.compute()["miou"]) for name, metric in metrics.items()}


@torch.no_grad()
def measure_model(model: nn.Module, config: Config, synth_root: str | Path, *, split: str = "test",
                  shuffled: bool = True, objects: bool = True, tokens: bool = False) -> dict:
    """Every column of one run on `split` of the benchmark in `synth_root` (see the module docstring);
    tokens under "tokens" when asked. `config.data.root` is set to `synth_root`: the clips and their
    object records always come from the same folder."""
    synth_root = Path(synth_root)
    config.data.root = str(synth_root)
    model.eval()
    loader = evaluation_loader(config, split)
    names = len(class_names(config))
    device = next(model.parameters()).device
    semantic = TaskMetric("semantic", names, 5)
    shuffled_metric = TaskMetric("semantic", names, 5) if shuffled else None
    binary = AVSBenchMetric(5, clips_per_batch=4, probabilities=True)
    tally = ObjectTally()
    global_counts = np.zeros(config.model.quantizer.codebook_size, np.int64)
    local_counts = np.zeros(config.model.quantizer.codebook_size, np.int64)
    recorder = TokenRecorder(model) if tokens else None
    token_rows, token_meta = [], []
    code_sets: dict[str, set] = {"global": set(), "local": set()}
    previous = None
    try:
        for batch, _damaged in loader:
            if batch is None:
                continue
            batch = batch.to(device)
            size = tuple(batch.semantic.shape[-2:])
            outputs = forward_batch(model, batch)
            prediction = predict(outputs, "semantic", size)
            semantic.update(batch, prediction)
            labelled = batch.label_present.flatten()
            if "pred_masks" in outputs:
                foreground = foreground_probability(outputs["pred_logits"], outputs["pred_masks"], size)
            else:
                foreground = (prediction["ids"] > 0).float()
            binary.update(foreground[labelled], batch.semantic.flatten(0, 1)[labelled] > 0)
            vq = outputs.get("vq") or {}
            for key, counts, name in (("indices", global_counts, "global"), ("local_indices", local_counts, "local")):
                if key in vq:
                    codes = vq[key].cpu()
                    counts += np.bincount(codes.flatten().numpy(), minlength=len(counts))[: len(counts)]
                    code_sets[name].update(map(tuple, codes.view(-1, codes.shape[-1]).tolist()))  # [clips or frames, K]
            ids = prediction["ids"].view(*batch.semantic.shape[:2], *size)
            for b, clip_id in enumerate(batch.clip_ids):
                extras = _load_extras(synth_root, clip_id) if (objects or recorder) else None
                if objects:
                    object_outcomes(ids[b].cpu(), batch.label_present[b].cpu(), extras, size, tally)
                if recorder is not None:
                    token_meta.append((clip_id, _clip_sources(extras), bool(extras["multi_source"])))
            if recorder is not None:
                taken = recorder.take()
                if taken is not None:
                    token_rows.append(taken)
            if shuffled_metric is not None:
                other = shuffled_audio_batch(batch, previous)
                if other is not None:
                    shuffled_metric.update(batch, predict(forward_batch(model, other), "semantic", size))
                if recorder is not None:
                    recorder.take()  # the shuffled pass's tokens are not this clip's
            previous = batch
    finally:
        if recorder is not None:
            recorder.close()
    result = semantic.compute()
    bin_result = binary.compute()
    out = {"miou": float(result["miou"]), "f": float(result["f"]),
           "binary_j": float(bin_result["j"]), "binary_f": float(bin_result["f"])}
    if shuffled_metric is not None:
        out["shuffled_miou"] = float(shuffled_metric.compute()["miou"])
    if objects:
        out["objects"] = tally.rates()
        out["object_counts"] = tally.totals()
    out["perplexity_global"] = _perplexity(global_counts)
    out["perplexity_local"] = _perplexity(local_counts)
    # how many different K-tuples of codes the clips (global) and frames (local) received: 1 means
    # every clip gets the same codewords, whatever it sounds like (the quantized tokens say nothing)
    out["code_sets_global"] = len(code_sets["global"]) or None
    out["code_sets_local"] = len(code_sets["local"]) or None
    if recorder is not None and token_rows:
        out["tokens"] = {"tokens": np.concatenate(token_rows), "meta": token_meta}
    return out
