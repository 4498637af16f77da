"""QSD's parts against their equations, value by value (written from the qsd package's mutation
survivors, docs/testing.md section 4): the fusion of Eq. 3 with attention computed by hand, the
clip's visual tokens laid out frame by frame with their positions and padding, the ASD ignoring
padded memory, the time-frequency cells, the FPN's top-down path, the default frame flags, the
frozen audio encoder and the warm-up counter after a load.

The whole model quantizes its tokens, so a small change upstream can leave its outputs unchanged
(the codewords stay the same): these tests look at each part's own output instead.
"""

import pytest
import torch
import torch.nn.functional as F

from avseg.models.mask_decoder import FPN, MLP
from avseg.models.qsd_extras import TF_CELLS, TimeFrequencyMemory
from avseg.models.recombination import SemanticRecombination
from avseg.models.semantic_decoder import AudioSemanticDecoder, AudioVisualFusion
from by_hand import attention as _attention
from by_hand import feed_forward as _ffn
from by_hand import layer_norm as _norm
from small_qsd import small_qsd

_model = small_qsd


def test_fusion_is_eq3_with_positions_on_the_keys_and_padding_ignored():
    torch.manual_seed(1)
    fusion = AudioVisualFusion(8, 2, 16).eval()
    audio, visual, pos = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        got = fusion(audio, visual, pos, visual_padding=padding)
        attended = _attention(fusion.cross_attn, audio, visual + pos, visual, padding)  # k = F_v + pos, v = F_v
        mid = _norm(fusion.norm1, audio + attended)
        expected = _norm(fusion.norm2, mid + _ffn(fusion.ffn, mid))
        unplaced = fusion(audio, visual)  # no positions, no padding: keys = values = F_v
        mid = _norm(fusion.norm1, audio + _attention(fusion.cross_attn, audio, visual, visual))
        expected_unplaced = _norm(fusion.norm2, mid + _ffn(fusion.ffn, mid))
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(unplaced, expected_unplaced, atol=1e-5)


def test_fuse_lays_out_the_clips_tokens_frame_by_frame():
    """`QSD.fuse`: token t*h*w + y*w + x of a clip is frame t's pixel (y, x) of the coarsest map,
    with its position; a padded frame's tokens are ignored (checked on a non-square map)."""
    model = _model().eval()
    torch.manual_seed(2)
    batch, frames, channels, h, w = 2, 3, 32, 2, 3
    audio = torch.randn(batch, frames, channels)
    coarse, pos = torch.randn(batch * frames, channels, h, w), torch.randn(batch * frames, channels, h, w)
    present = torch.tensor([[True, True, True], [True, True, False]])
    visual = torch.zeros(batch, frames * h * w, channels)
    positions = torch.zeros_like(visual)
    padding = torch.zeros(batch, frames * h * w, dtype=torch.bool)
    for b in range(batch):
        for t in range(frames):
            for y in range(h):
                for x in range(w):
                    visual[b, t * h * w + y * w + x] = coarse[b * frames + t, :, y, x]
                    positions[b, t * h * w + y * w + x] = pos[b * frames + t, :, y, x]
                    padding[b, t * h * w + y * w + x] = not present[b, t]
    with torch.no_grad():
        got = model.fuse(audio, coarse, pos, present)
        assert torch.allclose(got, model.fusion(audio, visual, positions, visual_padding=padding), atol=1e-6)
        coarse[5] = torch.randn(channels, h, w) * 10  # the padded frame (clip 1, frame 2)
        assert torch.allclose(model.fuse(audio, coarse, pos, present), got, atol=1e-6)


def test_the_semantic_decoder_ignores_padded_memory():
    torch.manual_seed(3)
    decoder = AudioSemanticDecoder(8, num_tokens=3, num_layers=2, n_heads=2, ffn_dim=16).eval()
    memory = torch.randn(2, 4, 8)
    padding = torch.tensor([[False, False, False, False], [False, False, True, True]])
    with torch.no_grad():
        tokens = decoder(memory, memory_padding=padding)
        memory[1, 2:] = torch.randn(2, 8) * 10
        assert torch.allclose(decoder(memory, memory_padding=padding), tokens, atol=1e-5)
        assert not torch.allclose(decoder(memory), tokens, atol=1e-3)  # unpadded, the garbage is read


def test_time_frequency_cells_are_projected_and_placed():
    torch.manual_seed(4)
    memory = TimeFrequencyMemory(5, 8)
    feature_map = torch.randn(2, 5, 6, 4)  # [N, D, time, frequency]
    with torch.no_grad():
        got = memory(feature_map)
        for t in range(6):
            for f in range(4):
                cell = feature_map[:, :, t, f] @ memory.proj.weight.T + memory.proj.bias
                assert torch.allclose(got[:, t * 4 + f], cell + memory.pos[t * 4 + f], atol=1e-6)
    assert TF_CELLS == 24 and memory.pos.abs().max() < 0.2  # small learned positions (std 0.02)
    with pytest.raises(ValueError) as caught:
        memory(torch.randn(2, 5, 5, 4))
    assert str(caught.value) == "the audio encoder's time-frequency map has 20 cells, expected 24"


def _up(x):
    """Nearest-neighbour upsampling by 2: each value repeated in a 2 x 2 block."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def test_fpn_adds_each_level_to_the_one_above_it_upsampled():
    torch.manual_seed(5)
    fpn = FPN(stride4_channels=6, d_model=8, mask_dim=3).eval()
    stride4 = torch.randn(1, 6, 16, 16)
    maps = [torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]  # strides 8, 16, 32
    with torch.no_grad():
        x16 = fpn.smooth[2](maps[1] + _up(maps[2]))
        x8 = fpn.smooth[1](maps[0] + _up(x16))
        x4 = fpn.smooth[0](fpn.lateral4(stride4) + _up(x8))
        assert torch.allclose(fpn(stride4, maps), fpn.out(x4), atol=1e-5)


def test_all_frames_are_present_unless_told():
    model = _model().eval()
    torch.manual_seed(6)
    frames, log_mel = torch.randn(1, 2, 3, 64, 64), torch.randn(1, 2, 96, 64)
    present = torch.ones(1, 2, dtype=torch.bool)
    taps = []
    handle = model.fusion.register_forward_hook(lambda m, args, kwargs, out: taps.append(kwargs["visual_padding"]),
                                                with_kwargs=True)
    with torch.no_grad():
        default, given = model(frames, log_mel), model(frames, log_mel, present)
    handle.remove()
    assert torch.equal(default["pred_masks"], given["pred_masks"])
    assert taps[0].dtype == torch.bool and not taps[0].any() and torch.equal(taps[0], taps[1])


def test_a_frozen_audio_encoder_keeps_no_graph():
    """The paper freezes VGGish: no gradient reaches it, and its activations are not kept."""
    model = _model("audio.freeze=true").train()
    log_mel = torch.randn(1, 2, 96, 64, requires_grad=True)
    audio, _ = model.encode_audio(log_mel)
    audio.sum().backward()
    assert log_mel.grad is None and all(p.grad is None for p in model.audio_encoder.parameters())
    assert model.audio_proj.weight.grad is not None
    trainable = _model("audio.freeze=false").train()  # the CPU configs train their tiny encoder
    trainable.encode_audio(log_mel)[0].sum().backward()
    assert log_mel.grad is not None


def test_a_loaded_warmup_counter_decides_when_quantizing_starts():
    warming = _model("model.extras.codebook_warmup_steps=5")
    assert not warming.quantizing
    fresh = _model("model.extras.codebook_warmup_steps=5")
    fresh.load_state_dict(warming.state_dict())  # 5 steps left: still continuous
    assert int(fresh.warmup_steps_left) == 5 and not fresh.quantizing
    with torch.no_grad():
        warming.warmup_steps_left.fill_(0)
    fresh.load_state_dict(warming.state_dict())  # the warm-up is over in the checkpoint
    assert fresh.quantizing


def test_mlp_puts_relu_between_its_layers_and_none_after_the_last():
    torch.manual_seed(7)
    mlp = MLP(4, 6, 3, num_layers=3)
    x = torch.randn(10, 4)
    first, second, last = mlp.layers
    with torch.no_grad():
        expected = last(F.relu(second(F.relu(first(x)))))
        got = mlp(x)
    assert torch.allclose(got, expected, atol=1e-6) and (got < 0).any()


def test_recombination_repeats_each_clips_tokens_over_its_frames():
    """Clip-level tokens `[B, K, C]` gate each of the clip's T frames; here T = K, so only the
    frame count tells the two layouts apart."""
    torch.manual_seed(8)
    recombination = SemanticRecombination(d_model=8, num_tokens=4, num_levels=1).eval()
    maps, tokens = [torch.randn(4, 8, 3, 3)], torch.randn(1, 4, 8)  # 1 clip of 4 frames, K = 4
    with torch.no_grad():
        clip_level = recombination(maps, tokens)[0]
        frame_level = recombination(maps, tokens.expand(4, -1, -1))[0]
    assert torch.allclose(clip_level, frame_level, atol=1e-6)
    with pytest.raises(ValueError) as caught:
        recombination([torch.randn(5, 8, 3, 3)], torch.randn(2, 4, 8))
    assert str(caught.value) == "5 frames cannot be split over 2 clips"
