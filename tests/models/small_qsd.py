"""The small QSD of the model tests: the CPU AVSS config at 64 px, width 32, one layer where it can."""

import torch

from avseg.config import load_config
from avseg.models.build import build_model

CONFIG = "configs/cpu/qsd_r18_synth_avss.yaml"
SMALL = ["data.image_size=64", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
         "model.qsd.asd_layers=1", "model.decoder_layers=2", "model.quantizer.codebook_size=16"]
# the paper's gradient-updated codebook (the CPU and demo configs turn on EMA upkeep)
GRADIENT_CODEBOOK = ["model.quantizer.codebook_ema=false", "model.quantizer.kmeans_init=false",
                     "model.quantizer.dead_code_threshold=0"]


def small_qsd(*overrides: str, config: str = CONFIG):
    """The small model with `overrides`, its weights drawn after torch.manual_seed(0)."""
    torch.manual_seed(0)
    return build_model(load_config(config, SMALL + list(overrides)))
