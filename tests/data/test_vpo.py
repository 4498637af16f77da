"""The VPO reader and check_vpo, on a set built by build-vpo and on a hand-made release layout."""

import csv
import shutil

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from avseg.data.sample import collate_samples
from avseg.data.vpo import NUM_CLASSES, OFFICIAL_CLASSES, VPODataset, centre_crop
from avseg.data.vpo_check import check_vpo
from avseg.errors import UserError
from test_vpo_build import H, OBJECTS, VPO_IDS, W, build, make_world, raster


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    world = make_world(tmp_path_factory.mktemp("world"))
    return build(world, tmp_path_factory.mktemp("vpo") / "VPO", seed=1, stereo=True)


def everything(root, variant, **options):
    """Samples of both splits by clip id, with the dataset and index each came from."""
    found = {}
    for split in ("train", "test"):
        dataset = VPODataset(root, split, variant=variant, **options)
        for index in range(len(dataset)):
            sample = dataset[index]
            found[sample.clip_id] = (sample, dataset, index)
    return found


def test_official_class_table():
    assert NUM_CLASSES == 22 and [c.id for c in OFFICIAL_CLASSES] == list(range(1, 22))
    by_name = {c.name: c for c in OFFICIAL_CLASSES}
    assert by_name["dog"].id == 9 and by_name["dog"].coco_category_ids == (18,)
    assert by_name["male"].coco_category_ids == (92,) and by_name["zebra"].id == 21


def test_reader_shapes_masks_and_labels(built):
    samples = everything(built, "msmi", image_size=None, load_waveform=True)
    assert sorted(samples, key=int) == ["2", "3", "7", "8", "9", "10", "11"]
    sample, _, _ = samples["3"]  # two dogs and a cat
    assert sample.frames.shape == (1, 3, H, W) and sample.frames.dtype == torch.float32
    assert sample.semantic.shape == (1, H, W) and sample.log_mel.shape == (3, 96, 64)
    assert sample.waveform.shape == (48000,) and sample.dataset == "vpo_msmi"
    assert sample.frame_present.tolist() == [True] and sample.label_present.tolist() == [True]
    expected = {ann_id: (raster(seg), VPO_IDS[cat]) for ann_id, cat, seg, _ in OBJECTS[3]}
    masks, labels = sample.masks[0], sample.labels[0]
    assert masks.shape == (3, H, W) and labels.tolist() == [9, 9, 6]
    for mask, ann_id in zip(masks, (301, 302, 303)):  # one mask per instance, the COCO raster
        assert torch.equal(mask, torch.from_numpy(expected[ann_id][0]))
        assert (sample.semantic[0][mask] == expected[ann_id][1]).all()
    assert sample.boxes(0).tolist()[0] == [2.0, 2.0, 13.0, 19.0]
    union = np.any([m for m, _ in expected.values()], axis=0)
    assert (sample.semantic[0][~torch.from_numpy(union)] == 0).all()


def test_reader_ss_resize_and_collate(built):
    samples = everything(built, "ss", image_size=32)
    assert {k.split("_")[0] for k in samples} == {"1", "2", "4", "7", "8", "9", "10", "11"}
    sample, _, _ = samples["1_101"]
    assert sample.frames.shape == (1, 3, 32, 32) and sample.semantic.shape == (1, 32, 32)
    assert sample.category == "dog" and sample.labels[0].tolist() == [9]
    assert sample.masks[0].shape == (1, 32, 32) and sample.masks[0].any()
    assert set(sample.semantic.unique().tolist()) == {0, 9}
    batch = collate_samples([s for s, _, _ in samples.values()])
    assert batch.frames.shape == (8, 1, 3, 32, 32) and batch.log_mel.shape == (8, 3, 96, 64)


def test_reader_audio_matches_the_built_mix(built):
    samples = everything(built, "ms", image_size=None, load_waveform=True)
    sample, dataset, index = samples["2"]
    stereo = dataset.mixture(index, stereo=True)
    written = soundfile.read(built / "VPO-MS" / "mixed" / "2.wav", dtype="float32")[0]
    assert stereo.shape == (48000, 2)
    np.testing.assert_array_equal(stereo, written)
    np.testing.assert_allclose(sample.waveform.numpy(), stereo.sum(axis=1), atol=1e-6)


def test_masks_per_class_without_coco_annotations(built, tmp_path):
    root = shutil.copytree(built, tmp_path / "VPO")
    (root / "vpo_instances.json").unlink()
    sample, _, _ = everything(root, "msmi", image_size=None)["3"]
    assert sample.labels[0].tolist() == [6, 9]  # the two dogs merge into one class mask
    dogs = torch.from_numpy(raster(OBJECTS[3][0][2]) | raster(OBJECTS[3][1][2]))
    assert torch.equal(sample.masks[0][1], dogs)


def test_missing_files_raise_user_errors(built, tmp_path):
    root = shutil.copytree(built, tmp_path / "VPO")
    (root / "VPO-MS" / "data" / "000000000007.jpg").unlink()
    with open(root / "VPO-MS" / "vpo_ms_data_stereo.csv", newline="") as handle:
        dog = next(r["vgg_file"] for r in csv.DictReader(handle)
                   if r["img_Id"] == "2" and r["cateName"] == "dog")
    (root / "audios" / f"{dog}.wav").unlink()
    ms = {d.items[i].sample_id: (d, i) for s in ("train", "test")
          for d in [VPODataset(root, s, variant="ms", image_size=None)] for i in range(len(d))}
    dataset, index = ms["7"]
    with pytest.raises(UserError, match="000000000007.jpg"):
        dataset[index]
    dataset, index = ms["2"]
    with pytest.raises(UserError, match=f"{dog}.wav"):
        dataset[index]
    csv_path = root / "VPO-MS" / "vpo_ms_data_stereo.csv"
    csv_path.write_text(csv_path.read_text().replace(",701,", ",799,"))
    with pytest.raises(UserError, match="annotation id 799"):
        [VPODataset(root, s, variant="ms") for s in ("train", "test")]
    with pytest.raises(UserError, match="vpo_msmi_data_stereo.csv: not found"):
        VPODataset(tmp_path / "nothing", "train", variant="msmi")


def test_check_vpo_reports_every_problem_in_one_run(built, tmp_path):
    assert check_vpo(built) == ([], 8 + 6 + 7)
    root = shutil.copytree(built, tmp_path / "VPO")
    (root / "VPO-SS" / "data" / "dog" / "000000000001.jpg").unlink()
    broken = next((root / "audios").glob("cat*"))
    broken.write_bytes(b"RIFF0000WAVEfmt garbage")
    empty = next((root / "audios").glob("dog*"))
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    csv_path = root / "VPO-MS" / "vpo_ms_data_stereo.csv"
    csv_path.write_text(csv_path.read_text().replace(",202,", ",999,"))
    problems, count = check_vpo(root)
    assert count == 21
    found = {(p.path, p.message.split(":")[0]) for p in problems}
    assert ("VPO-SS/data/dog/000000000001.jpg", "image not found") in found
    assert any(p.path == f"audios/{broken.name}" and "decod" in p.message for p in problems)
    assert any(p.path == "VPO-MS/vpo_ms_data_stereo.csv" and "annotation id 999" in p.message
               for p in problems)
    assert any(p.path == f"audios/{empty.name}" and "no audio samples" in p.message
               for p in problems)
    assert len([p for p in problems if p.path == f"audios/{broken.name}"]) == 1  # reported once


def test_check_vpo_names_a_missing_set(tmp_path):
    problems, count = check_vpo(tmp_path)
    assert count == 0 and problems[0].path == "." and "VPO-SS" in problems[0].message


def test_release_layout_with_official_classes(tmp_path):
    """CAVP's release: no vpo_classes.json, masks hold COCO ids (18 = dog), audio elsewhere."""
    root, audio = tmp_path / "VPO", tmp_path / "vggsound" / "audios"
    (root / "VPO-SS" / "data" / "dog").mkdir(parents=True)
    (root / "VPO-SS" / "mask" / "dog").mkdir(parents=True)
    audio.mkdir(parents=True)
    Image.new("RGB", (40, 30), (90, 120, 30)).save(root / "VPO-SS/data/dog/000000000042.jpg")
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[5:20, 10:30] = 18
    mask[0, 0] = 255  # CAVP's ignore value stays 255: no loss or metric counts the pixel
    Image.fromarray(mask).save(root / "VPO-SS/mask/dog/000000000042_000000000007.png")
    soundfile.write(audio / "abc_000010.wav", np.full(16000 * 10, 0.1, np.float32), 16000)
    with open(root / "VPO-SS" / "vpo_ss_data_stereo.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["vgg_file", "cateName", "cateId", "img_Id", "ann_Ids", "split",
                         "audio_pos"])
        writer.writerow(["abc_000010", "dog", 18, 42, 7, "val", 0.25])
    dataset = VPODataset(root, "test", variant="ss", audio_root=audio, image_size=None)
    sample = dataset[0]
    assert sample.clip_id == "42_7" and sample.semantic.shape == (1, 30, 40)
    assert sample.semantic[0, 5:20, 10:30].eq(9).all() and int(sample.semantic[0, 0, 0]) == 255
    assert sample.semantic.sum() == 9 * 15 * 20 + 255 and sample.labels[0].tolist() == [9]
    np.testing.assert_allclose(dataset.mixture(0, stereo=True)[0], [0.075, 0.025], rtol=1e-3)
    assert check_vpo(root, audio_root=audio) == ([], 1)
    assert len(VPODataset(root, "train", variant="ss", audio_root=audio)) == 0


def test_centre_crop_takes_the_middle_and_tiles_short_clips():
    wave = np.arange(10, dtype=np.float32)
    assert centre_crop(wave, 4).tolist() == [3, 4, 5, 6]
    assert centre_crop(np.array([1, 2, 3], np.float32), 7).tolist() == [1, 2, 3, 1, 2, 3, 1]
    with pytest.raises(ValueError):
        centre_crop(np.zeros(0, np.float32), 4)
