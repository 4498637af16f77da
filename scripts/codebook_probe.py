"""What a trained quantized QSD run's codebook does on the test split (docs/study.md, "Diagnosis").

    python scripts/codebook_probe.py runs/study/medium/runs/5_q_sd_avsr/seed0/best.pt

Prints, over the test clips: how many different K-tuples of global codes the clips get (and of local
codes the frames get), the most used codes of each token slot, how far the global tokens of one
slot spread across clips (mean distance to the slot's mean token), their mean norm, and the median
distance from a codeword to its nearest other codeword.
"""

from __future__ import annotations

import collections
import sys

import torch

from avseg.engine.checkpoint import model_from_checkpoint
from avseg.engine.evaluate import evaluation_loader
from avseg.engine.step import forward_batch


def main(path: str) -> int:
    torch.set_num_threads(1)
    loaded = model_from_checkpoint(path)
    model, config = (loaded[0], loaded[1]) if isinstance(loaded, tuple) else (loaded.model, loaded.config)
    if getattr(model, "quantizer", None) is None:
        raise SystemExit(f"{path}: not a quantized QSD run (no codebook)")
    model.eval()
    clips, frames, tokens = [], [], []
    hook = model.global_asd.register_forward_hook(lambda _m, _a, out: tokens.append(out.detach()))
    with torch.no_grad():
        for batch, _damaged in evaluation_loader(config, "test"):
            if batch is None:
                continue
            vq = forward_batch(model, batch)["vq"]
            clips += map(tuple, vq["indices"].view(-1, model.num_tokens).tolist())
            if "local_indices" in vq:
                frames += map(tuple, vq["local_indices"].view(-1, model.num_tokens).tolist())
    hook.remove()
    print(f"{len(clips)} test clips: {len(set(clips))} different global code tuples")
    if frames:
        print(f"{len(frames)} test frames: {len(set(frames))} different local code tuples")
    for k in range(model.num_tokens):
        print(f"  slot {k}: codes (code, clips) {collections.Counter(t[k] for t in clips).most_common(4)}")
    g = torch.cat(tokens)  # [clips, K, C]
    spread = (g - g.mean(0, keepdim=True)).norm(dim=-1).mean(0)
    codebook = model.quantizer.codebook.detach().float()
    gaps = torch.cdist(codebook, codebook).fill_diagonal_(float("inf")).min(dim=1).values
    print(f"global token spread across clips per slot {[round(x, 3) for x in spread.tolist()]}, "
          f"mean token norm {g.norm(dim=-1).mean():.3f}, median nearest-codeword gap {gaps.median():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
