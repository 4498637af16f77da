import torch

from avseg.data.targets import masks_to_targets


def test_semantic_targets_one_per_class():
    semantic = torch.zeros(6, 8, dtype=torch.int64)
    semantic[0:2, 0:2] = 5
    semantic[4:6, 6:8] = 5  # same class, two places: still one target
    semantic[3, 3] = 7  # one pixel
    targets = masks_to_targets(semantic, class_agnostic=False, min_area=0)
    assert targets["labels"].tolist() == [5, 7]
    assert targets["masks"].shape == (2, 6, 8) and targets["masks"].dtype == torch.bool
    assert int(targets["masks"][0].sum()) == 8
    assert torch.allclose(targets["boxes"][0], torch.tensor([0.5, 0.5, 1.0, 1.0]))
    assert masks_to_targets(semantic, class_agnostic=False, min_area=2)["labels"].tolist() == [5]


def test_class_agnostic_targets_split_components_above_min_area():
    semantic = torch.zeros(8, 8, dtype=torch.int64)
    semantic[0:3, 0:3] = 1  # 9 pixels
    semantic[3, 3] = 1  # touches the first one diagonally: same component (8-connectivity)
    semantic[5:8, 5:8] = 1  # 9 pixels
    semantic[0, 7] = 1  # a 1-pixel speck
    targets = masks_to_targets(semantic, class_agnostic=True, min_area=4)
    assert targets["labels"].tolist() == [1, 1]
    areas = sorted(targets["masks"].flatten(1).sum(1).tolist())
    assert areas == [9, 10]
    assert targets["boxes"].shape == (2, 4)
    specks = masks_to_targets(semantic, class_agnostic=True, min_area=1)
    assert len(specks["labels"]) == 3


def test_class_agnostic_keeps_the_largest_when_all_are_small():
    semantic = torch.zeros(8, 8, dtype=torch.int64)
    semantic[0, 0] = 1
    semantic[5:7, 5] = 1
    targets = masks_to_targets(semantic, class_agnostic=True, min_area=10)
    assert targets["labels"].tolist() == [1]
    assert int(targets["masks"].sum()) == 2
    empty = masks_to_targets(torch.zeros(4, 4, dtype=torch.int64), class_agnostic=True, min_area=1)
    assert empty["masks"].shape == (0, 4, 4) and empty["boxes"].shape == (0, 4)
