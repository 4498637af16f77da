"""Difficulty tiers of the synthetic benchmark: off-screen sounds, source caps, SNR re-mixes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avseg.data.synth import SynthConfig, build_class_bank, generate, synthesize_clip
from avseg.data.synth.config import TIERS, tier_config
from avseg.errors import UserError


@pytest.fixture(scope="module")
def bank():
    return build_class_bank(seed=3, num_classes=8)


def test_tier_presets_and_overrides():
    assert {name: tier_config(name).snr_db for name in TIERS} == {
        "easy": (10.0, 10.0), "medium": (0.0, 0.0), "hard": (-5.0, -5.0)}
    medium = tier_config("medium", clips=7)
    assert medium.clips == 7 and medium.max_sources == 4 and medium.offscreen_share == 0.25
    assert medium.objects == (2, 5)
    with pytest.raises(UserError, match="--tier"):
        tier_config("brutal")


def test_offscreen_sound_is_heard_not_labelled_and_leaves_the_rest_unchanged(bank):
    plain = SynthConfig(image_size=48, objects=(2, 4), snr_db=(30.0, 30.0))
    loud = SynthConfig(image_size=48, objects=(2, 4), snr_db=(30.0, 30.0), offscreen_share=1.0)
    for seed in range(6):
        a = synthesize_clip(plain, bank, seed, 5, multi_source=True)
        b = synthesize_clip(loud, bank, seed, 5, multi_source=True)
        assert a.offscreen_class == -1 and b.offscreen_class >= 1
        assert b.offscreen_class not in set(b.class_ids.tolist())  # not in the scene
        assert any(b.offscreen_sounding)
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.semantic, b.semantic)  # never labelled
        np.testing.assert_array_equal(a.sounding, b.sounding)
        on = np.repeat(np.array(b.offscreen_sounding), 16000)
        edge = np.zeros_like(on)
        for second in range(1, 5):  # the 10 ms on/off ramps spill over second boundaries
            edge[second * 16000 - 480: second * 16000 + 480] = True
        quiet = ~on & ~edge
        if quiet.sum() > 16000:
            # where the off-screen sound is silent, b is a (peak-rescaled) copy of a ...
            scale = float(np.dot(a.waveform[quiet], b.waveform[quiet]) / np.dot(a.waveform[quiet], a.waveform[quiet]))
            residual = b.waveform - scale * a.waveform
            assert np.abs(residual[quiet]).max() < 1e-4
            # ... and where it plays, something else is heard
            assert np.sqrt(np.mean(residual[on & ~edge] ** 2)) > 0.01
        else:
            assert not np.allclose(a.waveform, b.waveform)


def test_max_sources_caps_simultaneous_sources(bank):
    capped = SynthConfig(image_size=48, objects=(5, 5), max_sources=2)
    free = SynthConfig(image_size=48, objects=(5, 5))
    capped_counts = [synthesize_clip(capped, bank, k, 5, True).sounding.any(axis=1).sum() for k in range(30)]
    free_counts = [synthesize_clip(free, bank, k, 5, True).sounding.any(axis=1).sum() for k in range(30)]
    assert max(capped_counts) == 2 and min(capped_counts) == 2
    assert max(free_counts) >= 3  # without the cap, 5-object scenes reach 3 or 4 sources


def test_bad_tier_options_are_refused(tmp_path):
    with pytest.raises(UserError, match="--offscreen-share"):
        generate("avss", tmp_path / "a", SynthConfig(clips=2, image_size=48, num_classes=4, objects=(2, 4),
                                                      offscreen_share=0.5))
    with pytest.raises(UserError, match="--max-sources"):
        generate("avss", tmp_path / "b", SynthConfig(clips=2, image_size=48, max_sources=0))


def test_test_split_remixed_at_another_snr_keeps_scenes_and_labels(tmp_path):
    base = tier_config("medium", clips=10, image_size=48, num_classes=6, avss_subsets=("v1s", "v1m"))
    generate("avss", tmp_path / "full", base)
    generate("avss", tmp_path / "hard", tier_config("hard", clips=10, image_size=48, num_classes=6,
                                                     avss_subsets=("v1s", "v1m")), splits=("test",))
    full_rows = (tmp_path / "full" / "metadata.csv").read_text().splitlines()
    hard_rows = (tmp_path / "hard" / "metadata.csv").read_text().splitlines()
    test_rows = [row for row in full_rows[1:] if ",test," in row or row.endswith(",test")]
    assert len(hard_rows) - 1 == len(test_rows) > 0
    full_npz = sorted((tmp_path / "full" / "_synth" / "clips").rglob("*.npz"))
    hard_npz = sorted((tmp_path / "hard" / "_synth" / "clips").rglob("*.npz"))
    assert 0 < len(hard_npz) < len(full_npz)
    for path in hard_npz:
        twin = tmp_path / "full" / path.relative_to(tmp_path / "hard")
        with np.load(path) as hard, np.load(twin) as full:
            np.testing.assert_array_equal(hard["instances"], full["instances"])
            np.testing.assert_array_equal(hard["sounding"], full["sounding"])
            assert float(hard["snr_db"]) == -5.0 and float(full["snr_db"]) == 0.0
    wavs = sorted((tmp_path / "hard").rglob("*.wav"))
    assert wavs
    for wav in wavs:
        hard, _ = sf.read(wav)
        full, _ = sf.read(tmp_path / "full" / wav.relative_to(tmp_path / "hard"))
        assert hard.shape == full.shape and not np.allclose(hard, full)
    info = json.loads((tmp_path / "hard" / "_synth" / "info.json").read_text())
    assert info["complete"] and info["config"]["snr_db"] == [-5.0, -5.0]


def test_cli_tier_flag(tmp_path):
    from avseg.cli import main

    assert main(["synth", "--layout", "avss", "--out", str(tmp_path / "x"), "--clips", "4", "--image-size", "48",
                 "--num-classes", "6", "--tier", "hard", "--avss-subsets", "v1m", "--no-progress"]) == 0
    info = json.loads((Path(tmp_path) / "x" / "_synth" / "info.json").read_text())
    assert info["config"]["snr_db"] == [-5.0, -5.0] and info["config"]["offscreen_share"] == 0.25
