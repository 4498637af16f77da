"""What each Table-2 row hands the mask decoder, value by value (written from the qsd package's
mutation survivors, docs/testing.md section 4): the queries of rows 1, 3, 4 and 5 and the visual
maps they decode, the codebook loss of the extras' `codebook_from_local`, which usage histogram
each call counts, and the local indices the report and the study read.

Expected values are computed here from the parts' own outputs (taken with hooks) by the row's
formula, frame by frame, never by calling the code under test a second time.
"""

import pytest
import torch

from small_qsd import GRADIENT_CODEBOOK, small_qsd


ROWS = {  # Table 2: decomposition, recombination, local calibration
    1: ("none", "false", "false"), 3: ("continuous", "false", "false"),
    4: ("quantized", "false", "false"), 5: ("quantized", "true", "false"), 6: ("quantized", "true", "true"),
}
CLIPS, FRAMES, K = 2, 3, 5


def _model(row: int, *overrides):
    decomposition, recombination, local = ROWS[row]
    return small_qsd(*GRADIENT_CODEBOOK, f"model.qsd.decomposition={decomposition}",
                     f"model.qsd.recombination={recombination}", f"model.qsd.local_calibration={local}", *overrides)


def _inputs():
    torch.manual_seed(1)
    present = torch.ones(CLIPS, FRAMES, dtype=torch.bool)
    present[1, 2] = False  # a padded frame slot
    return torch.randn(CLIPS, FRAMES, 3, 64, 64), torch.randn(CLIPS, FRAMES, 96, 64), present


def _run(model):
    """One forward pass; the fused audio, the encoder's maps, the ASDs' tokens and what the mask
    decoder is called with."""
    taps = {}
    hooks = [model.fusion.register_forward_hook(lambda m, a, out: taps.__setitem__("fused", out)),
             model.encoder.register_forward_hook(lambda m, a, out: taps.__setitem__("maps", [x.clone() for x in out[0]])),
             model.mask_decoder.register_forward_pre_hook(
                 lambda m, args: taps.update(queries=args[0], decoded_maps=args[1]))]
    for name in ("global_asd", "local_asd"):
        if getattr(model, name) is not None:
            hooks.append(getattr(model, name).register_forward_hook(lambda m, a, out, name=name: taps.__setitem__(name, out)))
    try:
        out = model(*_inputs())
    finally:
        for hook in hooks:
            hook.remove()
    return out, taps


def _nearest(tokens, codebook):
    """Each token `[..., C]` -> its nearest codeword, by brute force."""
    flat = tokens.reshape(-1, tokens.shape[-1])
    return codebook[torch.cdist(flat, codebook).argmin(dim=1)].view_as(tokens)


def _per_frame(clip_tokens, fused):
    """Rows 3-5: frame t of clip b is queried with the clip's K tokens plus its own fused audio."""
    return torch.stack([clip_tokens[b] + fused[b, t] for b in range(CLIPS) for t in range(FRAMES)])


def _same_maps(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_row1_queries_are_each_frames_fused_audio_repeated_k_times():
    model = _model(1).eval()
    with torch.no_grad():
        out, taps = _run(model)
    fused = taps["fused"]  # [B, T, C]
    expected = torch.stack([fused[b, t].expand(K, -1) for b in range(CLIPS) for t in range(FRAMES)])
    assert taps["queries"].shape == (CLIPS * FRAMES, K, 32)
    assert torch.equal(taps["queries"], expected)
    assert out["vq"] == {} and _same_maps(taps["decoded_maps"], taps["maps"])


def test_row3_queries_are_the_clips_continuous_tokens_plus_the_frames_audio():
    model = _model(3).eval()
    with torch.no_grad():
        out, taps = _run(model)
    assert taps["global_asd"].shape == (CLIPS, K, 32)
    assert torch.allclose(taps["queries"], _per_frame(taps["global_asd"], taps["fused"]), atol=1e-6)
    assert out["vq"] == {} and _same_maps(taps["decoded_maps"], taps["maps"])


def test_row4_queries_are_the_clips_codewords_plus_the_frames_audio():
    model = _model(4).eval()
    with torch.no_grad():
        out, taps = _run(model)
    codewords = _nearest(taps["global_asd"], model.quantizer.codebook)
    assert torch.allclose(taps["queries"], _per_frame(codewords, taps["fused"]), atol=1e-5)
    assert {"codebook_loss", "commitment_loss", "indices"} <= set(out["vq"])
    assert _same_maps(taps["decoded_maps"], taps["maps"])  # no AVSR: the encoder's maps as they are


def test_row5_decodes_the_maps_recombined_with_the_clips_codewords():
    model = _model(5).eval()
    with torch.no_grad():
        _, taps = _run(model)
        codewords = _nearest(taps["global_asd"], model.quantizer.codebook)
        expected = model.recombination.naive_forward(taps["maps"], codewords)  # Eq. 5 written directly
    assert torch.allclose(taps["queries"], _per_frame(codewords, taps["fused"]), atol=1e-5)
    assert len(taps["decoded_maps"]) == len(expected)
    for got, want, before in zip(taps["decoded_maps"], expected, taps["maps"]):
        assert torch.allclose(got, want, atol=1e-4)
        assert not torch.allclose(got, before, atol=1e-2)


def test_codebook_from_local_adds_the_local_codebook_distance_to_the_global_one():
    model = _model(6, "model.extras.codebook_from_local=true").train()
    out, taps = _run(model)
    codebook = model.quantizer.codebook.detach()
    present = _inputs()[2].flatten()

    def distance(tokens):
        tokens = tokens.detach()
        return float(((tokens - _nearest(tokens, codebook)) ** 2).mean())

    global_d, local_d = distance(taps["global_asd"]), distance(taps["local_asd"][present])
    assert global_d > 1e-3 and local_d > 1e-3
    assert float(out["vq"]["codebook_loss"].detach()) == pytest.approx(global_d + local_d, rel=1e-5)
    assert float(out["vq"]["commitment_loss"].detach()) == pytest.approx(global_d, rel=1e-5)
    assert float(out["vq"]["local_commitment_loss"].detach()) == pytest.approx(local_d, rel=1e-5)


@pytest.mark.parametrize("overrides", [(), ("model.extras.codebook_from_local=true",)], ids=["paper", "codebook_from_local"])
def test_local_tokens_are_counted_in_the_local_histogram_and_reported_as_local_indices(overrides):
    model = _model(6, *overrides).eval()
    model.quantizer.reset_usage()
    with torch.no_grad():
        out, taps = _run(model)
    present = _inputs()[2].flatten()
    codebook = model.quantizer.codebook
    local_indices = torch.cdist(taps["local_asd"][present].flatten(0, 1), codebook).argmin(dim=1)
    global_indices = torch.cdist(taps["global_asd"].flatten(0, 1), codebook).argmin(dim=1)
    assert torch.equal(out["vq"]["local_indices"].flatten(), local_indices)
    assert torch.equal(out["vq"]["indices"].flatten(), global_indices)
    # 5 real frames x K local tokens, 2 clips x K global tokens, each in its own histogram
    assert torch.equal(model.quantizer.usage_histogram(local=True), torch.bincount(local_indices, minlength=16).float())
    assert torch.equal(model.quantizer.usage_histogram(), torch.bincount(global_indices, minlength=16).float())


def test_forward_hands_the_decoder_the_slot_embeddings_and_the_fpns_features():
    """Every frame's K queries carry the learned slot embeddings as their positions (identical
    codewords would otherwise give identical predictions), and the masks are drawn on the FPN's
    stride-4 features of the same frames."""
    model = _model(6).eval()
    seen = {}
    model.fpn.register_forward_hook(lambda m, a, out: seen.__setitem__("fpn", out))
    model.mask_decoder.register_forward_pre_hook(lambda m, args, kwargs: seen.update(args=args, kwargs=kwargs),
                                                 with_kwargs=True)
    with torch.no_grad():
        model(*_inputs())
    query_pos = seen["kwargs"]["query_pos"]
    assert query_pos.shape == (CLIPS * FRAMES, K, 32)
    assert all(torch.equal(query_pos[n], model.query_pos.weight) for n in range(CLIPS * FRAMES))
    assert seen["args"][3] is seen["fpn"] and seen["fpn"].shape[0] == CLIPS * FRAMES


def test_a_frozen_audio_encoder_stays_in_eval_mode_while_the_rest_trains():
    frozen = _model(6, "audio.freeze=true").train()
    assert not frozen.audio_encoder.training and frozen.fusion.training
    assert not any(p.requires_grad for p in frozen.audio_encoder.parameters())
    trained = _model(6, "audio.freeze=false").train()
    assert trained.audio_encoder.training and all(p.requires_grad for p in trained.audio_encoder.parameters())
    assert not frozen.eval().fusion.training


def test_the_clips_tokens_ignore_its_padded_frames():
    """Row 3 (continuous tokens, so no codeword can hide a change): whatever a padded frame slot
    holds, its clip's global tokens stay the same; a real frame's content changes them."""
    model = _model(3).eval()
    frames, log_mel, present = _inputs()
    tokens = []
    model.global_asd.register_forward_hook(lambda m, a, out: tokens.append(out))
    with torch.no_grad():
        model(frames, log_mel, present)
        frames[1, 2], log_mel[1, 2] = torch.randn(3, 64, 64) * 5, torch.randn(96, 64) * 5  # the padded slot
        model(frames, log_mel, present)
        log_mel[1, 1] = torch.randn(96, 64) * 5  # a real frame of the same clip
        model(frames, log_mel, present)
    assert torch.allclose(tokens[1], tokens[0], atol=1e-6)
    assert not torch.allclose(tokens[2][1], tokens[0][1], atol=1e-3)
