"""The composed QSD model: every trainable parameter learns; only global tokens move the codebook."""

import pytest
import torch

from small_qsd import GRADIENT_CODEBOOK, small_qsd


def build(*overrides):
    return small_qsd(*GRADIENT_CODEBOOK, *overrides)


def inputs():
    present = torch.ones(2, 3, dtype=torch.bool)
    present[1, 2] = False  # a padded frame slot
    return torch.randn(2, 3, 3, 64, 64), torch.randn(2, 3, 96, 64), present


def total_loss(out):
    loss = sum(out[k].float().square().mean() for k in ("pred_logits", "pred_boxes", "pred_masks"))
    loss = loss + sum(a["pred_masks"].square().mean() for a in out["aux_outputs"])
    return loss + sum(v for k, v in out["vq"].items() if k.endswith("loss"))


def test_gradients_reach_every_trainable_parameter():
    model = build().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    total_loss(model(*inputs())).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    # Zero-initialised gates (timm's last BN of each residual block, the deformable attention's
    # offset layers) give some parameters an exactly zero gradient at step 0; after one step
    # every trainable parameter must receive a non-zero gradient.
    optimizer.step()
    optimizer.zero_grad()
    total_loss(model(*inputs())).backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and not p.grad.abs().sum()]
    assert dead == []


def test_local_tokens_never_move_the_codebook():
    model = build().train()
    frames, log_mel, present = inputs()
    out = model(frames, log_mel, present)
    # Only the local commitment term: its gradient must not reach the codebook...
    out["vq"]["local_commitment_loss"].backward(retain_graph=True)
    codebook = model.quantizer.codebook
    assert codebook.grad is None or codebook.grad.abs().sum() == 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.local_asd.parameters())
    # ...while the global codebook term moves it.
    out["vq"]["codebook_loss"].backward()
    assert codebook.grad.abs().sum() > 0


def test_ema_codebook_statistics_change_only_through_global_tokens():
    model = build("model.quantizer.codebook_ema=true").train()
    quantizer = model.quantizer
    before = quantizer.embed_sum.clone()
    local = torch.randn(4, 5, 32)
    quantizer(local, update_codebook=False)
    assert torch.equal(quantizer.embed_sum, before)
    model(*inputs())
    assert not torch.equal(quantizer.embed_sum, before)


def test_padded_frames_do_not_change_real_frames_outputs():
    model = build().eval()
    frames, log_mel, present = inputs()
    with torch.no_grad():
        reference = model(frames, log_mel, present)["pred_masks"]
        frames[1, 2] = torch.randn_like(frames[1, 2]) * 10  # garbage in the padded slot
        log_mel[1, 2] = torch.randn_like(log_mel[1, 2]) * 10
        changed = model(frames, log_mel, present)["pred_masks"]
    real = [0, 1, 2, 3, 4]  # frames of clip 0 and the two real frames of clip 1 (B*T order)
    assert torch.allclose(reference[real], changed[real], atol=1e-5)


def test_codebook_from_local_lets_the_queries_move_the_codebook():
    # gradient mode: the local codebook term now reaches E (it is summed into codebook_loss)
    model = build("model.extras.codebook_from_local=true").train()
    out = model(*inputs())
    global_only = build().train()(*inputs())["vq"]["codebook_loss"]
    assert not torch.allclose(out["vq"]["codebook_loss"], global_only)
    codebook = model.quantizer.codebook
    out["vq"]["local_commitment_loss"].backward(retain_graph=True)
    assert codebook.grad is None or codebook.grad.abs().sum() == 0  # commitment never moves E
    out["vq"]["codebook_loss"].backward()
    assert codebook.grad.abs().sum() > 0


def test_codebook_from_local_seeds_kmeans_with_the_frame_tokens():
    model = build("model.extras.codebook_from_local=true", "model.quantizer.codebook_ema=true", "model.quantizer.kmeans_init=true").train()
    frames, log_mel, present = inputs()
    seen = []
    model.quantizer.register_forward_hook(lambda mod, args, kwargs, out: seen.append((args[0].shape, kwargs)),
                                          with_kwargs=True)
    model(frames, log_mel, present)
    # the 5 present frames x 5 tokens come first (k-means needs >= M = 16 vectors), then the 2 clips' tokens
    assert [(tuple(shape), kw["update_codebook"]) for shape, kw in seen] == [((5, 5, 32), True), ((2, 5, 32), True)]
    assert bool(model.quantizer.initialized)
    before = model.quantizer.embed_sum.clone()
    model.quantizer(torch.randn(4, 5, 32), update_codebook=True)
    assert not torch.equal(model.quantizer.embed_sum, before)


def test_codebook_from_local_needs_local_calibration():
    import pytest

    from avseg.errors import UserError

    with pytest.raises(UserError, match="codebook_from_local needs local tokens"):
        build("model.extras.codebook_from_local=true", "model.qsd.local_calibration=false")


def test_codebook_warmup_runs_continuous_tokens_then_quantizes():
    model = build("model.extras.codebook_warmup_steps=2", "model.quantizer.codebook_ema=true", "model.quantizer.kmeans_init=true",
                  "model.extras.codebook_from_local=true").train()
    frames, log_mel, present = inputs()
    assert model(frames, log_mel, present)["vq"] == {}  # continuous tokens, no VQ loss
    model.eval()
    with torch.no_grad():  # evaluation neither counts down nor quantizes before the warm-up ends
        assert model(frames, log_mel, present)["vq"] == {}
    model.train()
    assert model(frames, log_mel, present)["vq"] == {} and not bool(model.quantizer.initialized)
    vq = model(frames, log_mel, present)["vq"]
    assert bool(model.quantizer.initialized) and int(model.warmup_steps_left) == 0
    assert {"codebook_loss", "commitment_loss", "local_commitment_loss"} <= set(vq)


def test_checkpoints_without_the_warmup_counter_still_load():
    model = build()
    state = {k: v for k, v in model.state_dict().items() if k != "warmup_steps_left"}
    fresh = build("model.extras.codebook_warmup_steps=5")
    fresh.load_state_dict(state)
    assert int(fresh.warmup_steps_left) == 0 and fresh.quantizing


def test_time_frequency_memory_feeds_the_local_asd():
    model = build("model.extras.audio_memory=time_frequency").train()
    seen = []
    model.local_asd.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    out = model(*inputs())
    assert seen == [torch.Size([6, 25, 32])]  # per frame: the fused audio token + 6 x 4 time-frequency cells
    total_loss(out).backward()
    assert model.audio_tf.proj.weight.grad.abs().sum() > 0 and model.audio_tf.pos.grad.abs().sum() > 0


def test_checkpoints_from_before_the_extras_module_still_load():
    model = build("model.extras.audio_memory=time_frequency").eval()
    renamed = {key.replace("audio_tf.proj.", "audio_tf_proj.").replace("audio_tf.pos", "audio_tf_pos"): value
               for key, value in model.state_dict().items()}
    assert "audio_tf_pos" in renamed and "audio_tf_proj.weight" in renamed  # the old names
    fresh = build("model.extras.audio_memory=time_frequency").eval()
    fresh.load_state_dict(renamed)  # strict
    assert torch.equal(fresh.audio_tf.pos, model.audio_tf.pos)
    assert torch.equal(fresh.audio_tf.proj.weight, model.audio_tf.proj.weight)


def test_time_frequency_memory_needs_local_calibration():
    import pytest

    from avseg.errors import UserError

    with pytest.raises(UserError, match="audio_memory=time_frequency feeds the local ASD"):
        build("model.extras.audio_memory=time_frequency", "model.qsd.local_calibration=false")
    with pytest.raises(UserError, match="model.extras.audio_memory 'spectrum'"):
        build("model.extras.audio_memory=spectrum")


def test_gate_logits_multiplies_the_probabilities():
    from avseg.models.qsd import gate_logits

    generator = torch.Generator().manual_seed(0)
    cls, tags = torch.randn(3, 5, 8, generator=generator) * 6, torch.randn(3, 8, generator=generator) * 6
    gated = gate_logits(cls, tags)
    assert torch.allclose(gated.sigmoid(), cls.sigmoid() * tags.sigmoid()[:, None], atol=1e-6)
    assert torch.isfinite(gate_logits(torch.full((1, 1, 2), 40.0), torch.full((1, 2), 40.0))).all()
    # float32's logsigmoid is exactly 0 here: the clamp keeps log(p / (1 - p)) finite
    assert torch.isfinite(gate_logits(torch.full((1, 1, 2), 200.0), torch.full((1, 2), 200.0))).all()
    assert gate_logits(cls.half(), tags.half()).dtype == torch.float16  # computed in float32, returned as given


def test_tag_gating_silences_classes_the_audio_tags_rule_out():
    model = build("loss.audio_tagging=1", "model.extras.tag_gating=true").eval()
    with torch.no_grad():
        model.audio_tag_head.bias.fill_(-30.0)  # every class "silent" in every frame
        model.audio_tag_head.weight.zero_()
        out = model(*inputs())
    for o in (out, *out["aux_outputs"]):
        assert o["pred_logits"].sigmoid().max() < 1e-12
    plain = build("loss.audio_tagging=1", "model.extras.tag_gating=false").eval()
    with torch.no_grad():
        assert plain(*inputs())["pred_logits"].sigmoid().max() > 1e-6


def test_tag_gating_needs_the_tagging_loss():
    import pytest

    from avseg.errors import UserError

    with pytest.raises(UserError, match="tag_gating"):
        build("model.extras.tag_gating=true", "loss.audio_tagging=0")


def _nearest_codewords(tokens, codebook):
    """Brute force: each token `[n, C]` -> its nearest codeword `[n, C]`."""
    distances = ((tokens[:, None, :] - codebook[None]) ** 2).sum(-1)
    return codebook[distances.argmin(dim=1)]


def _run_with_taps(model, frames, log_mel, present):
    """Forward pass keeping the global ASD's tokens, the local ASD's tokens and the decoder's queries."""
    taps = {}
    hooks = [model.global_asd.register_forward_hook(lambda m, a, out: taps.__setitem__("global", out)),
             model.local_asd.register_forward_hook(lambda m, a, out: taps.__setitem__("local", out)),
             model.mask_decoder.register_forward_pre_hook(lambda m, args: taps.__setitem__("queries", args[0]))]
    try:
        out = model(frames, log_mel, present)
    finally:
        for hook in hooks:
            hook.remove()
    return out, taps


def test_local_calibration_makes_the_quantized_local_tokens_the_queries():
    """Row 6: the decoder's queries are each frame's local tokens snapped to the shared codebook
    (Eq. 6), not the global tokens; padded slots keep their unquantized local tokens."""
    model = build().eval()
    frames, log_mel, present = inputs()
    with torch.no_grad():
        out, taps = _run_with_taps(model, frames, log_mel, present)
    codebook = model.quantizer.codebook.detach()
    local, queries, flat_present = taps["local"], taps["queries"], present.flatten()
    expected = _nearest_codewords(local[flat_present].flatten(0, 1), codebook).view_as(local[flat_present])
    assert torch.allclose(queries[flat_present], expected, atol=1e-5)
    assert torch.allclose(queries[~flat_present], local[~flat_present])
    global_queries = _nearest_codewords(taps["global"].flatten(0, 1), codebook).view_as(taps["global"])
    assert not torch.allclose(queries[:3], global_queries[0].expand(3, -1, -1), atol=1e-3)
    # the local ASD decides the output: changing its weights changes the masks
    with torch.no_grad():
        for p in model.local_asd.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        changed = model(frames, log_mel, present)
    assert (changed["pred_masks"] - out["pred_masks"]).abs().max() > 1e-3


def test_vq_losses_are_the_distances_to_the_chosen_codewords():
    """commitment = mean ||S - sg[E_sel]||^2 of the global tokens, local commitment the same for
    the real frames' local tokens, codebook loss = the same distance (Eq. 9), all non-zero."""
    model = build().train()
    frames, log_mel, present = inputs()
    out, taps = _run_with_taps(model, frames, log_mel, present)
    codebook = model.quantizer.codebook.detach()
    tokens = taps["global"].detach().flatten(0, 1)
    global_distance = ((tokens - _nearest_codewords(tokens, codebook)) ** 2).mean()
    local = taps["local"].detach()[present.flatten()].flatten(0, 1)
    local_distance = ((local - _nearest_codewords(local, codebook)) ** 2).mean()
    vq = out["vq"]
    assert float(global_distance) > 1e-3 and float(local_distance) > 1e-3
    assert float(vq["commitment_loss"].detach()) == pytest.approx(float(global_distance), rel=1e-5)
    assert float(vq["codebook_loss"].detach()) == pytest.approx(float(global_distance), rel=1e-5)
    assert float(vq["local_commitment_loss"].detach()) == pytest.approx(float(local_distance), rel=1e-5)
    # the global commitment term pulls the global ASD towards the codebook
    vq["commitment_loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.global_asd.parameters())


@pytest.mark.parametrize("part", ["global_asd", "recombination", "fusion"])
def test_each_part_of_the_full_model_changes_the_output(part):
    model = build().eval()
    frames, log_mel, present = inputs()
    with torch.no_grad():
        before = model(frames, log_mel, present)["pred_masks"]
        for p in getattr(model, part).parameters():
            p.add_(torch.randn_like(p) * 0.5)
        after = model(frames, log_mel, present)["pred_masks"]
    assert (after - before).abs().max() > 1e-3


def test_local_query_audio_adds_the_frames_fused_audio_to_the_quantized_local_tokens():
    """Extras (row-6 diagnosis): queries = q(L_t) + F_av[t], the same F_av[t] as rows 3-5 add."""
    model = build("model.extras.local_query_audio=true").eval()
    frames, log_mel, present = inputs()
    fused = {}
    model.fusion.register_forward_hook(lambda m, a, out: fused.__setitem__("f", out))
    with torch.no_grad():
        _, taps = _run_with_taps(model, frames, log_mel, present)
    codebook = model.quantizer.codebook.detach()
    local, queries, flat_present = taps["local"], taps["queries"], present.flatten()
    frame_audio = fused["f"].flatten(0, 1).unsqueeze(1)
    expected = _nearest_codewords(local[flat_present].flatten(0, 1), codebook).view_as(local[flat_present])
    assert torch.allclose(queries[flat_present], expected + frame_audio[flat_present], atol=1e-5)


def test_local_reads_global_puts_the_clips_global_tokens_in_each_frames_memory():
    model = build("model.extras.local_reads_global=true").eval()
    frames, log_mel, present = inputs()
    seen = {}
    model.local_asd.register_forward_hook(lambda m, a, out: seen.__setitem__("memory", a[0]))
    with torch.no_grad():
        _, taps = _run_with_taps(model, frames, log_mel, present)
    memory = seen["memory"]
    assert memory.shape == (6, 1 + 5, 32)  # F_av[t] and the clip's K = 5 global tokens
    global_q = _nearest_codewords(taps["global"].flatten(0, 1), model.quantizer.codebook.detach()).view(2, 5, 32)
    assert torch.allclose(memory[:3, 1:], global_q[0].expand(3, -1, -1), atol=1e-5)  # clip 0's frames
    assert torch.allclose(memory[3:, 1:], global_q[1].expand(3, -1, -1), atol=1e-5)


def test_row6_diagnosis_options_need_local_calibration():
    from avseg.errors import UserError

    for option in ("local_query_audio", "local_reads_global"):
        with pytest.raises(UserError, match=f"model.extras.{option} changes the local ASD"):
            build(f"model.extras.{option}=true", "model.qsd.local_calibration=false")
    with pytest.raises(UserError, match="choose one"):
        build("model.extras.local_reads_global=true", "model.extras.codebook_from_local=true")
