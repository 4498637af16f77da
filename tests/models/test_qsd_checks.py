"""QSD's refusals, word for word: the Table-2 switches, the parts each row needs, the extras'
combinations that cannot work (each message names the option and what to set); and the class
gate applied to every decoder layer's output (from the qsd package's mutation survivors)."""

import pytest
import torch

from avseg.models.qsd import QSDSwitches
from avseg.models.qsd_extras import QSDExtras, gate_logits, gate_outputs
from small_qsd import small_qsd

LOCAL = "set model.qsd.local_calibration=true (with model.qsd.decomposition=quantized)"


@pytest.mark.parametrize("switches, message", [
    (dict(decomposition="maybe"), "decomposition must be one of ('none', 'continuous', 'quantized'), got 'maybe'"),
    (dict(decomposition="none", recombination=True, local_calibration=False),
     "recombination and local calibration need decomposition != 'none'"),
    (dict(decomposition="none", recombination=False, local_calibration=True),
     "recombination and local calibration need decomposition != 'none'"),
    (dict(decomposition="continuous", recombination=True, local_calibration=True),
     "local calibration commits local tokens to the codebook: needs decomposition='quantized'"),
])
def test_switches_refuse_rows_the_paper_does_not_have(switches, message):
    with pytest.raises(ValueError) as caught:
        QSDSwitches(**switches)
    assert str(caught.value) == message


def test_the_default_switches_are_the_full_model():
    assert QSDSwitches() == QSDSwitches("quantized", True, True)
    QSDSwitches("none", False, False)
    QSDSwitches("continuous", True, False)  # AVSR on continuous tokens is allowed


@pytest.mark.parametrize("extras, local, message", [
    (dict(audio_memory="spectrogram"), True, "model.extras.audio_memory 'spectrogram': expected one of embedding, time_frequency"),
    (dict(audio_memory="time_frequency"), False, f"model.extras.audio_memory=time_frequency feeds the local ASD: {LOCAL}"),
    (dict(tag_gating=True), True, "model.extras.tag_gating multiplies class scores by the audio-tagging head's: "
                                  "set loss.audio_tagging > 0"),
    (dict(codebook_from_local=True), False, f"model.extras.codebook_from_local needs local tokens: {LOCAL}"),
    (dict(local_query_audio=True), False, f"model.extras.local_query_audio changes the local ASD: {LOCAL}"),
    (dict(local_reads_global=True), False, f"model.extras.local_reads_global changes the local ASD: {LOCAL}"),
    (dict(local_reads_global=True, codebook_from_local=True), True,
     "model.extras.local_reads_global needs the global tokens before the local ones, "
     "model.extras.codebook_from_local the local ones first: choose one"),
    (dict(codebook_warmup_steps=-1), True, "model.extras.codebook_warmup_steps must be >= 0, got -1"),
])
def test_extras_name_the_option_and_what_to_set(extras, local, message):
    with pytest.raises(ValueError) as caught:
        QSDExtras(**extras).check(local_calibration=local)
    assert str(caught.value) == message


def test_extras_that_can_work_pass():
    QSDExtras().check(local_calibration=False)
    QSDExtras(tag_gating=True, audio_tagging_classes=3, codebook_warmup_steps=0).check(local_calibration=False)
    QSDExtras(audio_memory="time_frequency", codebook_from_local=True, local_query_audio=True).check(local_calibration=True)


def test_a_row_missing_a_part_or_holding_an_extra_one_is_named():
    model = small_qsd("model.decoder_layers=1")
    model._check_parts()  # the full model has all four
    local_asd = model.local_asd
    model.quantizer = None
    with pytest.raises(ValueError) as caught:
        model._check_parts()
    assert str(caught.value) == f"QSD part 'quantizer' must be given for {model.switches}"
    row5 = small_qsd("model.decoder_layers=1", "model.qsd.local_calibration=false")
    row5.local_asd = local_asd
    with pytest.raises(ValueError) as caught:
        row5._check_parts()
    assert str(caught.value) == f"QSD part 'local_asd' must be None for {row5.switches}"


def test_the_class_gate_reaches_every_layers_output():
    torch.manual_seed(0)
    tags = torch.randn(2, 4)
    layers = [{"pred_logits": torch.randn(2, 3, 4)} for _ in range(3)]
    outputs = {**layers[2], "aux_outputs": layers[:2]}
    expected = [gate_logits(layer["pred_logits"], tags) for layer in layers]
    gate_outputs(outputs, tags)
    for got, want in zip([*outputs["aux_outputs"], outputs], expected):
        assert torch.equal(got["pred_logits"], want)
