"""Single+ in the layout of CAVP's loader (`single_plus_cavp`), its check-data, and AVSS's
labels_semantic / CAVP audio features."""

import csv

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from avseg.cli import main
from avseg.config import load_config
from avseg.data.avss import AVSSDataset
from avseg.data.build import build_dataset, class_names
from avseg.data.check import run_checks
from avseg.data.datasets import DATASETS, task_of
from avseg.data.single_plus import SINGLE_PLUS_CLASSES, SinglePlusDataset
from avseg.errors import UserError

DOG = SINGLE_PLUS_CLASSES.index("dog_barking")
IMAGES = {"clip_a": ((32, 24), "dog_barking,background", "test"), "clip_b": ((20, 28), "dog_barking", "test"),
          "clip_c": ((16, 16), "male_speech,background", "train")}


def label_of(size):
    width, height = size
    ids = np.zeros((height, width), np.uint8)
    ids[3:9, 4:12] = DOG
    ids[0, 0] = 255
    return ids


def write_single_plus(root):
    for folder in ("frames", "labels", "salient_labels", "audios"):
        (root / folder).mkdir(parents=True)
    rows = []
    for n, (name, (size, category, split)) in enumerate(IMAGES.items()):
        Image.new("RGB", size, (30 * n, 90, 120)).save(root / "frames" / f"{name}.png")
        ids = label_of(size)
        Image.fromarray(ids).save(root / "labels" / f"{name}.png")
        salient = np.where(ids == 255, 255, ids == DOG).astype(np.uint8)  # 0 / 1, 255 = ignore
        Image.fromarray(salient).save(root / "salient_labels" / f"{name}.png")
        t = np.arange(16000 * 5) / 16000
        stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1)
        soundfile.write(root / "audios" / f"{name}.wav", (0.3 * stereo).astype(np.float32), 16000)
        rows.append([name, category, split])
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "category", "split"])
        writer.writerows(rows)
    return root


@pytest.fixture
def single_plus(tmp_path):
    return write_single_plus(tmp_path / "single_plus")


def test_reader_native_labels_with_ignore_and_cavp_audio(single_plus):
    dataset = SinglePlusDataset(single_plus, "test", frontend="cavp", load_waveform=True)
    assert len(dataset) == 2 and [c.clip_id for c in dataset.clips] == ["clip_a", "clip_b"]
    sample = dataset[1]
    assert sample.frames.shape == (1, 3, 28, 20) and sample.semantic.shape == (1, 28, 20)
    assert torch.equal(sample.semantic[0], torch.from_numpy(label_of((20, 28)).astype(np.int64)))
    assert sample.labels[0].tolist() == [DOG] and sample.category == "dog_barking"
    assert sample.log_mel.shape == (1, 2, 300, 64)  # the file's two channels kept, first 3 s
    assert float(sample.log_mel[0, 0].mean()) > float(sample.log_mel[0, 1].mean())  # left is louder
    assert sample.waveform.shape == (48000,)
    vggish = SinglePlusDataset(single_plus, "train", image_size=8)[0]
    assert vggish.log_mel.shape == (3, 96, 64) and vggish.semantic.shape == (1, 8, 8)
    assert [str(p) for p in dataset.mask_paths(1)] == ["labels/clip_b.png"]  # where --save-masks writes
    salient = SinglePlusDataset(single_plus, "test", salient=True)[0]
    assert set(salient.semantic.unique().tolist()) == {0, 1, 255} and salient.labels[0].tolist() == [1]


def test_registered_beside_the_avss_reading_and_built_from_config(single_plus):
    assert {"single_plus", "single_plus_cavp"} <= set(DATASETS) and task_of("single_plus_cavp") == "cavp"
    config = load_config(None, ["data.dataset=single_plus_cavp", f"data.root={single_plus}", "data.image_size=16",
                                "audio.frontend=cavp"])
    assert class_names(config) == list(SINGLE_PLUS_CLASSES) and len(SINGLE_PLUS_CLASSES) == 24
    assert build_dataset(config, "train")[0].frames.shape == (1, 3, 16, 16)
    assert build_dataset(config, "test")[0].frames.shape == (1, 3, 24, 32)  # native at evaluation


def test_bad_rows_and_labels_name_the_file(single_plus):
    with open(single_plus / "metadata.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["clip_d", "barking_cat", "test"])
    with pytest.raises(UserError, match="line 5.*barking_cat"):
        SinglePlusDataset(single_plus, "test")
    (single_plus / "metadata.csv").write_text("name,split\nclip_a,test\n")
    with pytest.raises(UserError, match="missing column"):
        SinglePlusDataset(single_plus, "test")


def test_check_data_reports_every_broken_file_without_stopping(single_plus, capsys):
    (single_plus / "frames" / "clip_a.png").write_bytes(b"\x89PNG not an image")
    (single_plus / "audios" / "clip_a.wav").unlink()  # a second problem of the same row
    bad = label_of((20, 28))
    bad[5, 5] = 99
    Image.fromarray(bad).save(single_plus / "labels" / "clip_b.png")
    report = run_checks("single_plus_cavp", single_plus)
    found = {p.path: p.message for p in report.problems}
    assert set(found) == {"frames/clip_a.png", "audios/clip_a.wav", "labels/clip_b.png"}
    assert "damaged frame" in found["frames/clip_a.png"] and "missing audio" in found["audios/clip_a.wav"]
    assert "99" in found["labels/clip_b.png"]
    assert report.clips_checked == 3 and report.clips_with_problems == 2
    assert main(["check-data", "--layout", "single_plus_cavp", str(single_plus), "--quiet"]) == 1
    assert "labels/clip_b.png" in capsys.readouterr().out


def test_avss_reads_labels_semantic_where_present(avss_tree, copy_tree):
    root = copy_tree(avss_tree)
    folder = root / "v1m" / "v1m_test_0"
    (folder / "labels_semantic").mkdir()
    written = []
    for t in range(5):
        ids = np.full((32, 32), 7, np.uint8)
        ids[t, :] = 255
        Image.fromarray(ids).save(folder / "labels_semantic" / f"{t}.png")
        written.append(ids)
    dataset = AVSSDataset(root, "test", subsets=("v1m",), image_size=32, frontend="cavp")
    index = [c.clip_id for c in dataset.clips].index("v1m_test_0")
    sample = dataset[index]
    assert torch.equal(sample.semantic[:5], torch.from_numpy(np.stack(written).astype(np.int64)))
    assert sample.log_mel.shape == (10, 1, 96, 64)  # ten 1 s chunks of the 10 s crop
    other = dataset[1 - index]  # no labels_semantic: the RGB labels as before
    assert 255 not in other.semantic.unique().tolist() and other.semantic.max() > 0
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(folder / "labels_semantic" / "2.png")
    problems = run_checks("avss", root).problems
    assert [p.path for p in problems] == ["v1m/v1m_test_0/labels_semantic/2.png"] and "90" in problems[0].message
