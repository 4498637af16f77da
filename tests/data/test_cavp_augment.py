"""CAVP's training augmentation (`data.train_augment: cavp`, avseg.data.augment): each step of the
authors' `train_aug` on hand-made samples, and the train split of VPO built with it."""

import pytest
import torch

from avseg.data.augment import AVS_SCALES, COCO_SCALES, AugmentedDataset, CavpAugment, cavp_augment_for
from avseg.data.sample import Sample, targets_from_semantic
from avseg.structures import IGNORE_INDEX


def make_sample(height=6, width=8, frames=1, stereo=True, labelled=None, present=None):
    """A sample whose pixel values say where they came from (frame value = x + 10 y)."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    plane = (xs + 10 * ys).float()
    video = plane.expand(frames, 3, height, width).clone()
    semantic = torch.zeros(frames, height, width, dtype=torch.int64)
    semantic[:, : height // 2, : width // 2] = 3  # class 3 top-left, class 5 bottom-right corner
    semantic[:, -1, -1] = 5
    labelled = torch.ones(frames, dtype=torch.bool) if labelled is None else labelled
    present = torch.ones(frames, dtype=torch.bool) if present is None else present
    semantic[~labelled] = 0
    targets = [targets_from_semantic(s) for s in semantic]
    log_mel = torch.stack([torch.zeros(300, 64), torch.ones(300, 64)]).unsqueeze(0) if stereo \
        else torch.zeros(frames, 96, 64)
    return Sample(frames=video, log_mel=log_mel, semantic=semantic, masks=[m for m, _ in targets],
                  labels=[lab for _, lab in targets], frame_present=present, label_present=labelled,
                  clip_id="c", dataset="vpo_ms")


def seeded(augment, sample, seed):
    torch.manual_seed(seed)
    return augment(sample)


def test_the_authors_scale_lists_and_who_gets_the_jitter():
    assert COCO_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0) and AVS_SCALES == (0.5, 0.75, 1.0)
    vpo, avss = cavp_augment_for("vpo_msmi", 512), cavp_augment_for("avss", 224)
    assert (vpo.scales, vpo.color_jitter, vpo.size) == (COCO_SCALES, True, 512)
    assert (avss.scales, avss.color_jitter, avss.flip_prob) == (AVS_SCALES, False, 0.5)
    assert cavp_augment_for("single_plus_cavp", 512).scales == COCO_SCALES  # run with --setup vpo_ss


def test_the_flip_mirrors_pixels_labels_masks_and_swaps_stereo_channels():
    sample = make_sample()
    out = seeded(CavpAugment(size=6, scales=(1.0,), flip_prob=1.0), sample, 0)
    # a 6 x 6 window of the mirrored 6 x 8 image: columns count down
    assert torch.equal(out.frames[0, 0, 0, 1:] - out.frames[0, 0, 0, :-1], -torch.ones(5))
    window = sample.frames.flip(-1)
    left = int(torch.nonzero(window[0, 0, 0] == out.frames[0, 0, 0, 0])[0])
    assert torch.equal(out.frames, window[..., left:left + 6])
    assert torch.equal(out.semantic, sample.semantic.flip(-1)[..., left:left + 6])
    assert torch.equal(out.log_mel[0, 0], sample.log_mel[0, 1]) and torch.equal(out.log_mel[0, 1], sample.log_mel[0, 0])
    unflipped = seeded(CavpAugment(size=6, scales=(1.0,), flip_prob=0.0), sample, 0)
    assert torch.equal(unflipped.log_mel, sample.log_mel)


def test_mono_and_vggish_audio_are_not_touched_by_the_flip():
    vggish = make_sample(frames=3, stereo=False)
    out = seeded(CavpAugment(size=6, scales=(1.0,), flip_prob=1.0), vggish, 0)
    assert torch.equal(out.log_mel, vggish.log_mel)


def test_the_crop_is_a_window_of_the_input_and_its_place_is_random():
    sample = make_sample(height=10, width=12)
    corners = set()
    for seed in range(12):
        out = seeded(CavpAugment(size=4, scales=(1.0,), flip_prob=0.0), sample, seed)
        value = int(out.frames[0, 0, 0, 0])
        top, left = divmod(value, 10)
        assert torch.equal(out.frames, sample.frames[..., top:top + 4, left:left + 4])
        assert torch.equal(out.semantic, sample.semantic[..., top:top + 4, left:left + 4])
        corners.add((top, left))
    assert len(corners) > 3


def test_a_small_image_is_padded_with_the_mean_and_255_labels():
    sample = make_sample(height=6, width=8)
    out = seeded(CavpAugment(size=10, scales=(1.0,), flip_prob=0.0), sample, 0)
    assert tuple(out.frames.shape[-2:]) == (10, 10)
    assert torch.equal(out.frames[..., :6, :8], sample.frames)  # nothing to crop: window at (0, 0)
    assert bool((out.frames[..., 6:, :] == 0).all()) and bool((out.frames[..., :, 8:] == 0).all())
    assert bool((out.semantic[:, 6:, :] == IGNORE_INDEX).all()) and bool((out.semantic[:, :, 8:] == IGNORE_INDEX).all())
    assert torch.equal(out.semantic[:, :6, :8], sample.semantic)
    assert not out.masks[0][:, 6:, :].any()


def test_unlabelled_and_padded_slots_stay_empty():
    labelled = torch.tensor([True, False, False])
    present = torch.tensor([True, True, False])
    sample = make_sample(frames=3, stereo=False, labelled=labelled, present=present)
    sample.frames[2] = 0
    out = seeded(CavpAugment(size=10, scales=(1.0,), color_jitter=True, flip_prob=0.0), sample, 1)
    assert bool((out.semantic[1:] == 0).all())  # no 255 where there is no ground truth
    assert bool((out.frames[2] == 0).all())  # the padded slot is not jittered into colour
    assert bool((out.semantic[0, 6:] == IGNORE_INDEX).all())


def test_rescale_is_nearest_on_labels_and_masks_follow_the_labels():
    sample = make_sample(height=6, width=8)
    out = seeded(CavpAugment(size=12, scales=(2.0,), flip_prob=0.0), sample, 0)
    assert tuple(out.frames.shape[-2:]) == (12, 12)
    value = out.semantic[0]
    # every label pixel of the 12 x 16 rescale is a 2 x 2 block of the original; the crop keeps 12 columns
    for m, lab in zip(out.masks[0], out.labels[0]):
        assert torch.equal(m, value == lab)
    assert set(torch.unique(value).tolist()) <= {0, 3, 5}


def test_an_object_cropped_away_leaves_the_targets():
    sample = make_sample(height=10, width=12)  # class 5 is the bottom-right pixel only
    for seed in range(10):
        out = seeded(CavpAugment(size=4, scales=(1.0,), flip_prob=0.0), sample, seed)
        present = set(torch.unique(out.semantic[0]).tolist()) - {0, IGNORE_INDEX}
        assert set(out.labels[0].tolist()) == present
        assert out.masks[0].shape[0] == len(present) and bool(out.masks[0].flatten(1).any(1).all())


def test_colour_jitter_changes_the_image_the_same_way_in_every_copy():
    sample = make_sample(frames=3, stereo=False)
    sample.frames = torch.rand(1, 3, 6, 8).expand(3, -1, -1, -1).clone() * 2 - 1
    plain = seeded(CavpAugment(size=6, scales=(1.0,), flip_prob=0.0), sample, 3)
    jittered = seeded(CavpAugment(size=6, scales=(1.0,), color_jitter=True, flip_prob=0.0), sample, 3)
    assert not torch.allclose(plain.frames, jittered.frames)
    assert torch.equal(jittered.frames[0], jittered.frames[1]) and torch.equal(jittered.frames[1], jittered.frames[2])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="size"):
        CavpAugment(size=0)
    with pytest.raises(ValueError, match="scales"):
        CavpAugment(size=4, scales=())


def test_vpo_train_split_reads_native_images_and_gives_crops(tmp_path):
    from avseg.data.build import build_dataset
    from avseg.errors import UserError
    from tests.data.test_cavp_rules import vpo_config, write_vpo_ss

    root = write_vpo_ss(tmp_path / "VPO")
    overrides = ["audio.frontend=cavp"]
    plain = build_dataset(vpo_config(root, *overrides), "train")
    augmented = build_dataset(vpo_config(root, *overrides, "data.train_augment=cavp"), "train")
    assert isinstance(augmented, AugmentedDataset) and augmented.augment.color_jitter
    assert augmented.dataset.dataset.image_size is None  # the reader keeps the native size
    assert len(augmented) == len(plain)
    for index in range(len(augmented)):
        sample = augmented[index]
        assert tuple(sample.frames.shape[-2:]) == (16, 16) and tuple(sample.semantic.shape[-2:]) == (16, 16)
    test = build_dataset(vpo_config(root, *overrides, "data.train_augment=cavp"), "test")
    assert not isinstance(test, AugmentedDataset)  # evaluation is never augmented
    with pytest.raises(UserError, match="data.train_augment"):
        build_dataset(vpo_config(root, *overrides, "data.train_augment=mosaic"), "train")
