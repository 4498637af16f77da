"""`avseg pretrain-audio`: pretrain the small audio encoder on audio tagging.

The paper's audio encoder is VGGish, pretrained on AudioSet and frozen. The CPU configs replace it
with `TinyAudioEncoder`, which starts from random weights. This step gives it what AudioSet gives
VGGish: before QSD is trained, the encoder (plus a linear head, thrown away afterwards) learns to
name the classes sounding in each second of the train split's audio (multi-label BCE). QSD then
loads it with `audio.tiny_weights=PATH` and, as in the paper, keeps it frozen (`audio.freeze=true`).
Measured on the demo, it did not make QSD learn faster (docs/model.md, row "audio encoder help
for from-scratch runs"); it is an option for experiments, not used by any shipped config.

Only the train split is learned from; the val split is reported (exact-set accuracy, precision and
recall of the tags at probability 0.5). Class-agnostic data (S4, MS3) have no classes to tag.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avseg.config import Config
from avseg.data.build import SkipDamaged, build_dataset, class_names
from avseg.data.datasets import is_binary
from avseg.data.sample import BACKGROUND
from avseg.engine.seeding import seed_everything
from avseg.errors import UserError
from avseg.audio.tiny import TinyAudioEncoder



def tagging_examples(config: Config, split: str) -> tuple[Tensor, Tensor, list[str]]:
    """Every labelled second of `split`: (log-mel `[N, 96, 64]`, multi-hot tags `[N, classes]`,
    damaged clips as "clip: error" lines). Damaged clips are skipped and named, never fatal."""
    num_classes = len(class_names(config)) - 1
    dataset = SkipDamaged(build_dataset(config, split))
    mels, tags, damaged = [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        if not hasattr(sample, "log_mel"):
            damaged.append(f"{sample.clip_id}: {sample.error}")
            continue
        for t in range(min(sample.num_frames, sample.log_mel.shape[0])):
            if not (sample.label_present[t] and sample.frame_present[t]):
                continue
            tag = torch.zeros(num_classes)
            ids = torch.unique(sample.semantic[t])
            ids = ids[(ids != BACKGROUND) & (ids <= num_classes)]
            tag[ids - 1] = 1.0
            mels.append(sample.log_mel[t])
            tags.append(tag)
    if not mels:
        raise UserError(f"no labelled second in the {split} split of {config.data.root} ({len(damaged)} damaged clips)")
    return torch.stack(mels), torch.stack(tags), damaged


class Tagger(nn.Module):
    """The audio encoder and a linear tagging head."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.encoder = TinyAudioEncoder()
        self.head = nn.Linear(128, num_classes)

    def forward(self, log_mel: Tensor) -> Tensor:
        return self.head(self.encoder(log_mel))


@torch.no_grad()
def tagging_scores(model: nn.Module, mels: Tensor, tags: Tensor, batch_size: int = 256) -> dict[str, float]:
    """Exact-set accuracy, precision and recall of the tags at p > 0.5, and the mean BCE."""
    model.eval()
    logits = torch.cat([model(mels[i:i + batch_size]) for i in range(0, len(mels), batch_size)])
    predicted, truth = logits.sigmoid() > 0.5, tags.bool()
    hits = float((predicted & truth).sum())
    return {
        "exact_set_accuracy": float((predicted == truth).all(dim=1).float().mean()),
        "precision": hits / max(float(predicted.sum()), 1.0),
        "recall": hits / max(float(truth.sum()), 1.0),
        "bce": float(F.binary_cross_entropy_with_logits(logits, tags)),
        "seconds": len(mels),
    }


def pretrain_audio(config: Config, out: Path, *, epochs: int = 15, lr: float = 1e-3, batch_size: int = 32,
                   log=print) -> dict:
    """Train `TinyAudioEncoder` + head on the train split's tags; save the encoder to `out`.

    Returns {"train": scores, "val": scores or None, "path": str, "seconds": float}.
    """
    if is_binary(config.data.dataset):
        raise UserError(f"pretrain-audio needs class labels; data.dataset '{config.data.dataset}' is class-agnostic")
    if config.audio.encoder != "tiny":
        raise UserError(f"pretrain-audio trains the 'tiny' audio encoder; audio.encoder is '{config.audio.encoder}'")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise UserError("pretrain-audio: --epochs and --batch-size must be >= 1 and --lr > 0")
    start = time.perf_counter()
    seed_everything(config.seed)
    mels, tags, damaged = tagging_examples(config, "train")
    for line in damaged:
        log(f"skipped damaged clip {line}")
    try:
        val = tagging_examples(config, config.data.val_split)[:2]
    except UserError as err:
        log(f"no validation scores: {err}")
        val = None
    model = Tagger(tags.shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(mels), generator=generator)
        total = 0.0
        for i in range(0, len(order), batch_size):
            index = order[i:i + batch_size]
            if len(index) < 2:  # BatchNorm needs two examples
                continue
            loss = F.binary_cross_entropy_with_logits(model(mels[index]), tags[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        line = f"epoch {epoch + 1}/{epochs}: train BCE {total / len(order):.4f}"
        if val is not None:
            scores = tagging_scores(model, *val)
            line += f", val exact-set accuracy {scores['exact_set_accuracy']:.3f}"
        log(line)
    result = {"train": tagging_scores(model, mels, tags), "val": tagging_scores(model, *val) if val else None}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save({"encoder": "tiny", "state_dict": model.encoder.state_dict(), "num_classes": tags.shape[1],
                "scores": result}, partial)
    os.replace(partial, out)
    result.update(path=str(out), seconds=round(time.perf_counter() - start, 1), damaged=damaged)
    return result


def add_cli_arguments(parser) -> None:
    parser.add_argument("config", type=Path, help="a config with audio.encoder=tiny on class-labelled data")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. data.root=runs/demo/data")
    parser.add_argument("--out", type=Path, required=True, help="where to write the encoder weights (.pt)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)


def format_scores(result: dict) -> str:
    parts = []
    for split in ("train", "val"):
        scores = result.get(split)
        if scores:
            parts.append(f"{split}: exact-set accuracy {scores['exact_set_accuracy']:.3f}, precision "
                         f"{scores['precision']:.3f}, recall {scores['recall']:.3f} ({scores['seconds']} s of audio)")
    return "; ".join(parts)


def run_cli(args) -> int:
    from avseg.config import load_config

    config = load_config(args.config, args.overrides)
    result = pretrain_audio(config, args.out, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                            log=lambda line: print(line, flush=True))
    print(format_scores(result))
    print(f"wrote {result['path']}; train QSD with: audio.tiny_weights={result['path']} audio.freeze=true",
          file=sys.stdout)
    return 0
