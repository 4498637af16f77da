"""Builders: the only place that reads the model, audio and loss sections of a `Config`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avseg.audio.tiny import TinyAudioEncoder
from avseg.config import Config
from avseg.errors import UserError
from avseg.models.backbones import BACKBONES, Backbone
from avseg.models.encoder import MultiScaleEncoder
from avseg.models.mask_decoder import FPN, MaskDecoder
from avseg.models.qsd import DECOMPOSITIONS, QSD, QSDSwitches
from avseg.models.qsd_extras import QSDExtras
from avseg.models.quantizer import SharedCodebookQuantizer
from avseg.models.recombination import SemanticRecombination
from avseg.models.semantic_decoder import AudioSemanticDecoder, AudioVisualFusion
from avseg.models.separation import SeparateThenSegment, build_separator
from avseg.models.tpavi import TPAVI

MODELS = ("qsd", "tpavi", "cavp")
AUDIO_ENCODERS = ("vggish", "tiny")


def build_audio_encoder(config: Config) -> tuple[nn.Module, int]:
    """(audio encoder mapping log-mel `[N, 96, 64]` to `[N, dim]`, dim)."""
    audio = config.audio
    if audio.encoder == "vggish":
        from avseg.audio import load_vggish

        return load_vggish(audio.vggish_weights or None), 128
    if audio.encoder == "tiny":
        encoder = TinyAudioEncoder()
        if audio.tiny_weights:
            from avseg.audio.tiny import load_tiny_weights

            load_tiny_weights(encoder, audio.tiny_weights)
        return encoder, 128
    raise UserError(f"audio.encoder '{audio.encoder}': expected one of {', '.join(AUDIO_ENCODERS)}")


def _check(config: Config) -> None:
    model = config.model
    if model.name not in MODELS:
        raise UserError(f"model.name '{model.name}': expected one of {', '.join(MODELS)}")
    if model.qsd.decomposition not in DECOMPOSITIONS:
        raise UserError(f"model.qsd.decomposition '{model.qsd.decomposition}': expected one of "
                        f"{', '.join(DECOMPOSITIONS)}")
    if model.backbone not in BACKBONES:
        raise UserError(f"model.backbone '{model.backbone}': expected one of {', '.join(BACKBONES)}")
    if model.d_model % model.n_heads:
        raise UserError(f"model.d_model ({model.d_model}) must be divisible by model.n_heads ({model.n_heads})")
    if model.num_classes < 1:
        raise UserError(f"model.num_classes must be >= 1, got {model.num_classes}")


def qsd_switches(config: Config) -> QSDSwitches:
    qsd = config.model.qsd
    try:
        return QSDSwitches(qsd.decomposition, qsd.recombination, qsd.local_calibration)
    except ValueError as err:
        raise UserError(f"model.qsd.decomposition / recombination / local_calibration: {err}") from None


def qsd_extras(config: Config) -> QSDExtras:
    """The non-paper options of the config, checked once (`QSDExtras.check`); UserError names the key."""
    m, x = config.model, config.model.extras
    extras = QSDExtras(audio_tagging_classes=m.num_classes if config.loss.audio_tagging > 0 else 0,
                       tag_gating=x.tag_gating, codebook_from_local=x.codebook_from_local,
                       codebook_warmup_steps=x.codebook_warmup_steps, audio_memory=x.audio_memory,
                       local_query_audio=x.local_query_audio, local_reads_global=x.local_reads_global)
    try:
        extras.check(local_calibration=m.qsd.local_calibration)
    except ValueError as err:
        raise UserError(str(err)) from None
    return extras


def build_qsd(config: Config, backbone: Backbone, audio_encoder: nn.Module, audio_dim: int) -> QSD:
    m, q, vq = config.model, config.model.qsd, config.model.quantizer
    switches = qsd_switches(config)
    extras = qsd_extras(config)
    decoded = switches.decomposition != "none"
    return QSD(
        backbone=backbone,
        encoder=MultiScaleEncoder(backbone.channels[1:], d_model=m.d_model, num_layers=m.encoder_layers,
                                  n_heads=m.n_heads, n_points=m.encoder_points, ffn_dim=m.ffn_dim, dropout=m.dropout),
        audio_encoder=audio_encoder, audio_dim=audio_dim,
        fusion=AudioVisualFusion(m.d_model, m.n_heads, m.ffn_dim, m.dropout),
        mask_decoder=MaskDecoder(d_model=m.d_model, num_classes=m.num_classes, num_layers=m.decoder_layers,
                                 n_heads=m.n_heads, ffn_dim=m.ffn_dim, num_levels=3, mask_dim=m.mask_dim,
                                 dropout=m.dropout),
        fpn=FPN(backbone.channels[0], m.d_model, m.mask_dim),
        num_tokens=q.num_tokens, switches=switches,
        global_asd=AudioSemanticDecoder(m.d_model, q.num_tokens, q.asd_layers, m.n_heads, m.ffn_dim, m.dropout) if decoded else None,
        local_asd=AudioSemanticDecoder(m.d_model, q.num_tokens, q.asd_layers, m.n_heads, m.ffn_dim, m.dropout)
        if switches.local_calibration else None,
        quantizer=SharedCodebookQuantizer(dim=m.d_model, codebook_size=vq.codebook_size, ema=vq.codebook_ema,
                                          decay=vq.codebook_decay, dead_code_threshold=vq.dead_code_threshold,
                                          kmeans_init=vq.kmeans_init, lookup_dim=vq.lookup_dim, cosine=vq.cosine)
        if switches.decomposition == "quantized" else None,
        recombination=SemanticRecombination(m.d_model, q.num_tokens, 3) if switches.recombination else None,
        freeze_audio_encoder=config.audio.freeze, extras=extras,
    )


def build_criterion(config: Config) -> nn.Module:
    """The loss of the configured model: QSD's set criterion, TPAVI's dense one or CAVP's."""
    from avseg.models.dense_criterion import AVM_FORMS, DenseCriterion
    from avseg.models.criterion import SetCriterion
    from avseg.models.matcher import HungarianMatcher

    loss, model = config.loss, config.model
    if model.name == "cavp":
        from avseg.models.cavp_loss import CavpCriterion

        c = model.cavp
        return CavpCriterion(binary=model.num_classes == 1, contrast_weight=c.contrast_weight,
                             temperature=c.temperature, max_views=c.max_views)
    if model.name == "tpavi":
        if loss.tpavi_avm_form not in AVM_FORMS:
            raise UserError(f"loss.tpavi_avm_form '{loss.tpavi_avm_form}': expected one of {', '.join(AVM_FORMS)}")
        return DenseCriterion(binary=model.num_classes == 1, avm_weight=loss.tpavi_avm_weight,
                              avm_form=loss.tpavi_avm_form)
    matcher = HungarianMatcher(cost_class=loss.cls, cost_mask=loss.mask, cost_dice=loss.dice, cost_bbox=loss.bbox,
                               cost_giou=loss.giou, focal_alpha=loss.focal_alpha, focal_gamma=loss.focal_gamma,
                               cost_slot=loss.slot_order)
    weights = {"loss_ce": loss.cls, "loss_mask": loss.mask, "loss_dice": loss.dice, "loss_bbox": loss.bbox,
               "loss_giou": loss.giou}
    return SetCriterion(model.num_classes, matcher, weights, focal_alpha=loss.focal_alpha,
                        focal_gamma=loss.focal_gamma, lambda_vq=loss.lambda_vq, beta=loss.beta,
                        audio_tagging=loss.audio_tagging)


CAVP_AUDIO = ("resnet18", "vggish")


def build_cavp(config: Config) -> nn.Module:
    """CAVP (docs/cavp.md) from `model.backbone`, `model.num_classes` and `model.cavp`."""
    from avseg.models.cavp import CAVP
    from avseg.models.cavp_parts import DilatedResNet, ResNet18Audio, VGGishAudio

    m, c = config.model, config.model.cavp
    width = c.aspp_channels + c.low_level_channels
    if c.audio_network == "resnet18":
        audio = ResNet18Audio(width, c.audio_channels, c.audio_weights or None)
    elif c.audio_network == "vggish":
        audio = VGGishAudio(width, config.audio.vggish_weights or None)
    else:
        raise UserError(f"model.cavp.audio_network '{c.audio_network}': expected one of {', '.join(CAVP_AUDIO)}")
    backbone = DilatedResNet(m.backbone, output_stride=c.output_stride, layer4_dilations=tuple(c.layer4_dilations),
                             weights=m.backbone_weights or None)
    return CAVP(backbone=backbone, audio_encoder=audio, num_outputs=m.num_classes + 1, aspp_channels=c.aspp_channels,
                low_level_channels=c.low_level_channels, aspp_rates=tuple(c.aspp_rates),
                projector_hidden=c.projector_hidden, fusion_heads=c.fusion_heads,
                freeze_audio_encoder=config.audio.freeze, head_lr_mult=c.head_lr_mult, audio_lr_mult=c.audio_lr_mult)


def build_model(config: Config, *, allow_import: bool = False) -> nn.Module:
    """QSD (any Table-2 row), the TD wrapper of row 2, or TPAVI, as the config says.

    allow_import: honour a "package.module:factory" model.qsd.separator (only for a config the user
    passed on the command line with --allow-import; never for one read from a checkpoint).
    """
    _check(config)
    m = config.model
    if m.name == "cavp":
        return build_cavp(config)
    backbone = Backbone(m.backbone, image_size=config.data.image_size, weights=m.backbone_weights or None,
                        drop_path=m.backbone_drop_path)
    audio_encoder, audio_dim = build_audio_encoder(config)
    if m.name == "tpavi":
        outputs = 1 if m.num_classes == 1 else m.num_classes + 1
        return TPAVI(backbone=backbone, audio_encoder=audio_encoder, audio_dim=audio_dim, channels=m.tpavi.channels,
                     num_outputs=outputs, stages=tuple(m.tpavi.stages), freeze_audio_encoder=config.audio.freeze,
                     window=m.tpavi.window, audio_bias=m.tpavi.audio_bias)
    model = build_qsd(config, backbone, audio_encoder, audio_dim)
    q = m.qsd
    if q.separator:
        if q.decomposition != "none":
            raise UserError("model.qsd.separator (row 2, TD) runs the baseline per source: "
                            "set model.qsd.decomposition=none")
        separator = build_separator(q.separator, q.num_sources, allow_import=allow_import)
        return SeparateThenSegment(model, separator, q.num_sources)
    return model
