"""`avseg synth` output passes `avseg check-data` and reads back through every reader."""

import pytest
import torch

from avseg.cli import main
from avseg.data.build import build_reader as build_dataset
from avseg.data.check import check_dataset
from avseg.data.sample import collate_samples


@pytest.mark.parametrize("layout, frames", [("s4", 5), ("ms3", 5), ("avss", 10)])
def test_synth_check_and_read_back(tmp_path, capsys, layout, frames):
    root = tmp_path / layout
    assert main(["synth", "--layout", layout, "--out", str(root), "--clips", "9", "--seed", "3",
                 "--image-size", "48", "--num-classes", "4", "--split", "0.34,0.33,0.33", "--no-progress"]) == 0
    problems, checked = check_dataset(layout, root)
    assert problems == [] and checked == 9
    assert main(["check-data", "--layout", layout, str(root)]) == 0
    assert "all 9 clips OK" in capsys.readouterr().out
    for split in ("train", "val", "test"):
        dataset = build_dataset(layout, root, split, image_size=48)
        assert len(dataset) == 3
        batch = collate_samples([dataset[0], dataset[1]])
        assert batch.frames.shape == (2, frames, 3, 48, 48)
        assert batch.log_mel.shape == (2, frames, 96, 64)
        labelled = batch.label_present[0]
        assert labelled.any() and torch.all(batch.semantic[0][~labelled] == 0)
        # Some labelled frame holds a sounding object.
        assert (batch.semantic[batch.label_present] > 0).any()
