"""Every config mistake a user can make is one line naming the file or override, through the CLI."""

from __future__ import annotations

import pytest
from reliability_helpers import CONFIG, assert_one_line_error, avseg


@pytest.mark.parametrize("override, fragments", [
    ("data.root=${nope}", ["override 'data.root=${nope}'", "interpolation", "'data.root'", "nope"]),
    ("data.image_size=-64", ["override 'data.image_size=-64'", "data.image_size", "-64", "out of range"]),
    ("train.lr=-1", ["override 'train.lr=-1'", "train.lr", "-1.0", "learning rate"]),
    ("train.epochs=0", ["override 'train.epochs=0'", "train.epochs", "at least 1"]),
    ("data.batch_size=0", ["data.batch_size", "at least 1"]),
    ("train.lr=nan", ["train.lr", "nan"]),
    ("data.datset=s4", ["unknown config key 'data.datset'", "did you mean 'data.dataset'"]),
])
def test_bad_override_is_one_line(tmp_path, override, fragments):
    result = avseg("train", CONFIG, f"output_dir={tmp_path / 'run'}", override)
    assert_one_line_error(result, "train", *fragments)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_out_of_range_value_in_a_file_names_the_file(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("train:\n  lr: -0.001\n", encoding="utf-8")
    assert_one_line_error(avseg("train", str(config)), "train", f"{config}", "train.lr", "-0.001")


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("data:\n  root: [a\n  image_size: 64\n", encoding="utf-8")
    line = assert_one_line_error(avseg("train", str(config)), "train", str(config), "not valid YAML")
    assert "line 3, column 13" in line, line  # where the parser gave up on the unclosed "["


def test_interpolation_in_a_file_names_the_file(tmp_path):
    config = tmp_path / "interp.yaml"
    config.write_text("output_dir: ${train.nothing}\n", encoding="utf-8")
    assert_one_line_error(avseg("train", str(config)), "train", str(config), "interpolation", "output_dir")
