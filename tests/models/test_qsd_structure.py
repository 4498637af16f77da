"""How QSD's parts are built (written from the constructor survivors of the qsd mutation package):
`model.dropout` reaches every attention and feed-forward block and the modules' own default is
none; the FPN's convolutions, GroupNorms and ReLUs against functional calls; AVSR's gate filter
written out; the heads' sizes (DETR's 3-layer box MLP, a 2-layer controller, CondInst's 8-channel
mask features); the audio-tagging head only with tag classes; a one-step warm-up still waits a step."""

import pytest
import torch
import torch.nn.functional as F

from avseg.models.mask_decoder import FPN, DynamicMaskHead, MaskDecoder
from avseg.models.qsd_extras import QSDExtras
from avseg.models.recombination import SemanticRecombination
from avseg.models.semantic_decoder import AudioSemanticDecoder, AudioVisualFusion, DecoderLayer
from small_qsd import small_qsd

_model = small_qsd


def _dropouts(module):
    """Every dropout probability inside `module`: attention's and nn.Dropout's."""
    return [m.dropout if isinstance(m, torch.nn.MultiheadAttention) else m.p for m in module.modules()
            if isinstance(m, (torch.nn.MultiheadAttention, torch.nn.Dropout))]


def test_model_dropout_reaches_every_attention_and_feed_forward_block():
    model = _model("model.dropout=0.3")
    for part in ("fusion", "global_asd", "local_asd", "mask_decoder"):
        found = _dropouts(getattr(model, part))
        assert found and set(found) == {0.3}, part
    # each decoder layer: self-attention, cross-attention and the feed-forward's dropout
    assert len(_dropouts(model.mask_decoder.layers[0])) == 3


def test_the_parts_default_to_no_dropout():
    for module in (AudioVisualFusion(8, 2, 16), DecoderLayer(8, 2, 16), AudioSemanticDecoder(8, 4, 1, 2, 16),
                   MaskDecoder(d_model=8, num_classes=3, num_layers=1, n_heads=2, ffn_dim=16, num_levels=2)):
        assert set(_dropouts(module)) == {0.0}, type(module).__name__


def test_fpn_blocks_are_3x3_conv_groupnorm_relu_and_its_ends_1x1():
    torch.manual_seed(1)
    fpn = FPN(stride4_channels=6, d_model=8, mask_dim=3)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        for block in fpn.smooth:
            conv, norm = block[0], block[1]
            expected = F.relu(F.group_norm(F.conv2d(x, conv.weight, conv.bias, padding=1), norm.num_groups,
                                           norm.weight, norm.bias, norm.eps))
            assert torch.allclose(block(x.clone()), expected, atol=1e-5)
        lateral, norm = fpn.lateral4
        y = torch.randn(2, 6, 5, 5)
        expected = F.group_norm(F.conv2d(y, lateral.weight, lateral.bias), norm.num_groups, norm.weight, norm.bias, norm.eps)
        assert torch.allclose(fpn.lateral4(y), expected, atol=1e-5)
    assert fpn.out.kernel_size == (1, 1) and lateral.kernel_size == (1, 1)


def test_avsr_gates_are_a_two_layer_relu_filter_of_the_tokens():
    """Eq. 5's w_k = sigmoid(W2 relu(W1 s_k + b1) + b2)."""
    torch.manual_seed(2)
    avsr = SemanticRecombination(d_model=8, num_tokens=3, num_levels=1)
    tokens = torch.randn(2, 3, 8)
    first, last = avsr.filters[0], avsr.filters[-1]
    with torch.no_grad():
        expected = torch.sigmoid(torch.relu(tokens @ first.weight.T + first.bias) @ last.weight.T + last.bias)
        assert torch.allclose(avsr.gates([torch.randn(2, 8, 2, 2)], tokens), expected, atol=1e-6)


def test_head_sizes():
    decoder = MaskDecoder(d_model=8, num_classes=3, num_layers=1, n_heads=2, ffn_dim=16, num_levels=2)
    assert decoder.level_embed.shape == (2, 8)  # one embedding per level
    assert len(decoder.box_head.layers) == 3 and decoder.box_head.layers[-1].out_features == 4  # cx, cy, w, h
    assert len(decoder.controller.layers) == 2 and decoder.controller.layers[-1].out_features == 169
    assert DynamicMaskHead().shapes == [(10, 8), (8, 8), (8, 1)]  # 8 mask channels + 2 coordinates


def test_the_audio_tagging_head_exists_only_with_tag_classes():
    assert _model("loss.audio_tagging=0", "model.extras.tag_gating=false").audio_tag_head is None
    tagged = _model("loss.audio_tagging=1.0")  # the CPU config's setting
    assert tagged.audio_tag_head is not None and tagged.audio_tag_head.out_features == tagged.mask_decoder.class_head.out_features
    QSDExtras(tag_gating=True, audio_tagging_classes=1).check(local_calibration=False)  # one class is enough
    binary = small_qsd("loss.audio_tagging=1.0", config="configs/cpu/qsd_r18_synth_s4.yaml")
    assert binary.audio_tag_head.out_features == 1  # S4 / MS3: one "sounding" tag


def test_a_one_step_warmup_runs_one_continuous_step():
    model = _model("model.extras.codebook_warmup_steps=1").train()
    assert not model.quantizing
    frames, log_mel = torch.randn(1, 2, 3, 64, 64), torch.randn(1, 2, 96, 64)
    assert model(frames, log_mel)["vq"] == {}
    assert model.quantizing and model(frames, log_mel)["vq"] != {}


def test_time_frequency_memory_needs_an_encoder_with_a_feature_map():
    from avseg.models.qsd import QSD

    model = _model()
    with pytest.raises(ValueError) as caught:
        QSD(backbone=model.backbone, encoder=model.encoder, audio_encoder=torch.nn.Linear(4, 4), audio_dim=4,
            fusion=model.fusion, mask_decoder=model.mask_decoder, fpn=model.fpn, num_tokens=5, switches=model.switches,
            global_asd=model.global_asd, local_asd=model.local_asd, quantizer=model.quantizer,
            recombination=model.recombination, extras=QSDExtras(audio_memory="time_frequency"))
    assert str(caught.value) == ("model.extras.audio_memory=time_frequency needs an audio encoder with feature_map/embed "
                                 "(VGGish, tiny)")
