"""Decomposed semantics (the paper's Fig. 6): where the global tokens of multi-source clips lie.

Each clip gives K global tokens (the global ASD's output, before quantization). For every class
c, its single-source centroid is the mean of all tokens of the single-source clips of class c.
For a token of a multi-source clip with sounding classes S:

    d_own   = min over c in S of     || token - centroid_c ||
    d_other = min over c not in S of || token - centroid_c ||

and the **decomposition ratio** is mean(d_own) / mean(d_other) over all tokens of multi-source
clips. Below 1, mixtures are decomposed into tokens near their own sources' semantics; about 1 or
above, the tokens do not tell the sources apart. The t-SNE picture (scikit-learn) shows the same
tokens in 2-D, single-source clips coloured by class, multi-source clips as grey crosses.
"""

from __future__ import annotations

import numpy as np


def decomposition_ratio(tokens: np.ndarray, meta: list[tuple[str, list[int], bool]]) -> dict:
    """tokens `[N, K, C]` (one row per clip), meta (clip id, sounding classes, multi-source) per clip."""
    single = {}
    for row, (_clip, classes, multi) in zip(tokens, meta):
        if not multi and len(classes) == 1:
            single.setdefault(classes[0], []).append(row)
    centroids = {c: np.concatenate(rows).mean(axis=0) for c, rows in single.items()}
    own, other = [], []
    for row, (_clip, classes, multi) in zip(tokens, meta):
        if not multi:
            continue
        mine = [centroids[c] for c in classes if c in centroids]
        rest = [v for c, v in centroids.items() if c not in classes]
        if not mine or not rest:
            continue
        for token in row:
            own.append(min(float(np.linalg.norm(token - v)) for v in mine))
            other.append(min(float(np.linalg.norm(token - v)) for v in rest))
    if not own:
        return {"ratio": None, "tokens": 0, "classes_with_centroid": len(centroids)}
    return {"ratio": float(np.mean(own) / max(np.mean(other), 1e-12)), "d_own": float(np.mean(own)),
            "d_other": float(np.mean(other)), "tokens": len(own), "classes_with_centroid": len(centroids)}


def tsne_png(tokens: np.ndarray, meta: list[tuple[str, list[int], bool]], title: str, seed: int = 0) -> bytes | None:
    """A t-SNE scatter of every token: single-source tokens coloured by class, multi-source grey."""
    from sklearn.manifold import TSNE

    from avseg.report.figures import png_bytes  # sets matplotlib's Agg backend before pyplot is imported
    import matplotlib.pyplot as plt  # noqa: E402

    flat = tokens.reshape(-1, tokens.shape[-1])
    if flat.shape[0] < 5:
        return None
    per_clip = tokens.shape[1]
    points = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (flat.shape[0] - 1) / 3)), init="pca",
                  random_state=seed).fit_transform(flat)
    figure, axis = plt.subplots(figsize=(5.2, 4.4))
    cmap = plt.get_cmap("tab10")
    for index, (_clip, classes, multi) in enumerate(meta):
        xy = points[index * per_clip:(index + 1) * per_clip]
        if multi or len(classes) != 1:
            axis.scatter(xy[:, 0], xy[:, 1], marker="x", s=14, color="0.55", alpha=0.6)
        else:
            axis.scatter(xy[:, 0], xy[:, 1], s=14, color=cmap(classes[0] % 10), alpha=0.85)
    seen = sorted({m[1][0] for m in meta if not m[2] and len(m[1]) == 1})
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=cmap(c % 10), label=f"class {c}") for c in seen]
    handles.append(plt.Line2D([], [], marker="x", linestyle="", color="0.55", label="multi-source"))
    axis.legend(handles=handles, fontsize=7, loc="best")
    axis.set(title=title, xticks=[], yticks=[])
    return png_bytes(figure)
