"""An exported avseg graph (`avseg export`) run by ONNX Runtime, called like the PyTorch model.

    model = OnnxModel("qsd.onnx")
    outputs = model(frames, log_mel)        # {"pred_logits": ..., "pred_masks": ...} as torch tensors
    predictor = Predictor.from_onnx("qsd.onnx")   # avseg predict --runtime onnx qsd.onnx

The graph has a fixed clip length T (its metadata says which): a call with another number of
frames is cut into T-frame windows, and a short last window is filled by repeating its last frame
(those outputs are dropped). Threads: `intra_op_threads` (default: ONNX Runtime's, one per core).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avseg.config import Config, config_from_dict
from avseg.errors import UserError

META_PREFIX = "avseg."


def read_metadata(path: str | Path) -> dict[str, str]:
    """The avseg entries of an exported graph's metadata (UserError if it is not one)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf decode errors come in several types
        raise UserError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0] if str(err) else err})") from None
    meta = {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}
    missing = [k for k in ("config", "frames", "image_size", "outputs") if k not in meta]
    if missing:
        raise UserError(f"{path}: not written by avseg export (metadata without {', '.join(missing)})")
    return meta


class OnnxModel:
    """An ONNX Runtime session over an avseg graph, with the model's config and class names."""

    def __init__(self, path: str | Path, *, intra_op_threads: int | None = None, providers: list[str] | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        meta = read_metadata(self.path)
        self.config: Config = config_from_dict(json.loads(meta["config"]))
        self.frames = int(meta["frames"])
        self.image_size = int(meta["image_size"])
        self.output_names = tuple(meta["outputs"].split(","))
        self.class_names = json.loads(meta.get("class_names", "null"))
        self.random_init = meta.get("random_init") == "true"
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as err:
            raise UserError(f"{self.path}: ONNX Runtime cannot load it ({str(err).splitlines()[0]})") from None

    def run_graph(self, frames: np.ndarray, log_mel: np.ndarray) -> dict[str, np.ndarray]:
        """One graph call: frames `[B, T, 3, S, S]`, log_mel `[B, T, 96, 64]` (T, S as exported)."""
        if frames.shape[1:] != (self.frames, 3, self.image_size, self.image_size):
            raise UserError(f"{self.path}: expects frames [B, {self.frames}, 3, {self.image_size}, "
                            f"{self.image_size}], got {list(frames.shape)}")
        feed = {"frames": np.ascontiguousarray(frames, dtype=np.float32),
                "log_mel": np.ascontiguousarray(log_mel, dtype=np.float32)}
        return dict(zip(self.output_names, self.session.run(list(self.output_names), feed)))

    def __call__(self, frames: Tensor, log_mel: Tensor, frame_present: Tensor | None = None, **_) -> dict:
        """Like the PyTorch model: `[B, T, ...]` inputs, outputs of the B*T frames as CPU tensors.

        Any T: cut into windows of the exported length, the last one padded by repeating its last frame."""
        if frame_present is not None and not bool(frame_present.all()):
            raise UserError(f"{self.path}: the ONNX graph assumes every frame is present")
        frames_np, mel_np = frames.detach().cpu().float().numpy(), log_mel.detach().cpu().float().numpy()
        batch, total = frames_np.shape[:2]
        pieces: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
        for start in range(0, total, self.frames):
            count = min(self.frames, total - start)
            index = np.minimum(np.arange(start, start + self.frames), start + count - 1)
            outputs = self.run_graph(frames_np[:, index], mel_np[:, index])
            for name, value in outputs.items():
                per_clip = value.reshape(batch, self.frames, *value.shape[1:])[:, :count]
                pieces[name].append(per_clip)
        return {name: torch.from_numpy(np.concatenate(parts, axis=1).reshape(batch * total, *parts[0].shape[2:]))
                for name, parts in pieces.items()}
