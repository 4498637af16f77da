"""The TPAVI baseline: factorised attention equals the reference's direct form; shapes; gradients."""

import torch
from torch import nn

from avseg.models.backbones import Backbone
from avseg.models.tpavi import TPAVI, TPAVIBlock


class TinyAudio(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(96 * 64, 128)

    def forward(self, log_mel):
        return self.linear(log_mel.flatten(1))


def test_factorised_attention_equals_direct_form():
    torch.manual_seed(0)
    block = TPAVIBlock(16, audio_dim=12).double().eval()
    with torch.no_grad():  # the zero-initialised output projection would hide any difference
        block.out[1].weight.normal_()
        block.out[1].bias.normal_()
    visual = torch.randn(2, 16, 3, 5, 4, dtype=torch.float64)
    audio = torch.randn(2, 3, 12, dtype=torch.float64)
    fast, aligned = block(visual, audio)
    assert torch.allclose(fast, block.naive_attention(visual, audio), atol=1e-10)
    assert aligned.shape == (2, 3, 16)


def test_tpavi_outputs_and_gradients():
    model = TPAVI(backbone=Backbone("r18", image_size=64), audio_encoder=TinyAudio(), channels=16,
                  num_outputs=3, freeze_audio_encoder=False)
    out = model(torch.randn(2, 3, 3, 64, 64), torch.randn(2, 3, 96, 64))
    assert out["semantic_logits"].shape == (6, 3, 64, 64)
    assert [f.shape[-1] for f in out["stage_features"]] == [16, 8, 4, 2]
    out["semantic_logits"].square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


# --- the official code's quirks, each on a hand-computed small case -------------------------------

from avseg.models.tpavi import FusionBlock, ResidualConvUnit  # noqa: E402


def _zero_convs(module):
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def test_residual_unit_skip_adds_relu_of_its_input():
    # official: `out = self.relu(x)` with inplace=True rewrites x, so `out + x` adds relu(x)
    unit = _zero_convs(ResidualConvUnit(1))
    x = torch.tensor([[-1.0, 2.0], [3.0, -4.0]]).view(1, 1, 2, 2)
    assert torch.equal(unit(x), torch.tensor([[0.0, 2.0], [3.0, 0.0]]).view(1, 1, 2, 2))


def test_decoder_upsampling_aligns_corners():
    block = _zero_convs(FusionBlock(1, with_skip=False))
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    out = block(x)[0, 0]
    # align_corners=True: the corners stay, steps of 1/3 between them (False would give 0, .25, .75, 1)
    assert torch.allclose(out[0], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))
    assert torch.allclose(out[:, 0], torch.tensor([0.0, 2 / 3, 4 / 3, 2.0]))


def _small_tpavi(window=5, audio_bias=True):
    torch.manual_seed(0)
    model = TPAVI(backbone=Backbone("r18", image_size=64), audio_encoder=TinyAudio(), channels=16,
                  num_outputs=3, window=window, audio_bias=audio_bias)
    with torch.no_grad():  # the zero-initialised output projections would hide the attention
        for block in model.tpavi.values():
            block.out[1].weight.normal_()
            block.out[1].bias.normal_()
    return model.eval()


@torch.no_grad()
def test_padded_frame_slots_change_nothing_and_predict_zero():
    model = _small_tpavi(audio_bias=False)  # as the official AVSS model
    frames, log_mel = torch.randn(1, 5, 3, 64, 64), torch.randn(1, 5, 96, 64)
    alone = model(frames, log_mel)["semantic_logits"]
    padded_frames = torch.cat([frames, torch.randn(1, 5, 3, 64, 64)], dim=1)  # garbage in padded slots
    padded_mel = torch.cat([log_mel, torch.randn(1, 5, 96, 64)], dim=1)
    present = torch.tensor([[True] * 5 + [False] * 5])
    out = model(padded_frames, padded_mel, present)
    assert torch.allclose(out["semantic_logits"][:5], alone, atol=1e-5)
    assert torch.equal(out["semantic_logits"][5:], torch.zeros_like(out["semantic_logits"][5:]))
    assert all(bool((f[5:] == 0).all()) for f in out["stage_features"])
    assert all(bool((a[:, 5:] == 0).all()) for a in out["stage_audio"])  # zeroed embedding, no bias


@torch.no_grad()
def test_tpavi_attends_within_windows_of_five_frames():
    frames, log_mel = torch.randn(1, 10, 3, 64, 64), torch.randn(1, 10, 96, 64)
    other_frames, other_mel = frames.clone(), log_mel.clone()
    other_frames[:, 5:] = torch.randn(1, 5, 3, 64, 64)
    other_mel[:, 5:] = torch.randn(1, 5, 96, 64)
    windowed = _small_tpavi(window=5)
    first = windowed(frames, log_mel)["semantic_logits"]
    second = windowed(other_frames, other_mel)["semantic_logits"]
    assert torch.allclose(first[:5], second[:5], atol=1e-6)  # frames 0-4 never see frames 5-9
    whole = _small_tpavi(window=0)
    assert not torch.allclose(whole(frames, log_mel)["semantic_logits"][:5],
                              whole(other_frames, other_mel)["semantic_logits"][:5], atol=1e-4)


@torch.no_grad()
def test_stage_features_are_the_relud_tpavi_outputs():
    out = _small_tpavi()(torch.randn(1, 5, 3, 64, 64), torch.randn(1, 5, 96, 64))
    assert all(bool((f >= 0).all()) and bool((f == 0).any()) for f in out["stage_features"])
