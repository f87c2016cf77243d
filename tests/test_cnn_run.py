"""configs/cnn_digits.yaml end to end: the conv net trains on images, its first layer's filters are in
TensorBoard as an image grid, and (slow) the full run reaches the accuracy the README promises."""

import pytest
import torch

from manualnet.cli.main import main
from manualnet.log.telemetry import filter_grid
from tests.helpers import config_path, summary


def train_cnn_config(tmp_path, name, *overrides):
    run_dir = tmp_path / name
    code = main(["train", "--config", str(config_path(name)), "--run-dir", str(run_dir), "--quiet",
                 *[arg for override in overrides for arg in ("--set", override)]])
    assert code == 0
    return run_dir


def train_cnn(tmp_path, *overrides):
    return train_cnn_config(tmp_path, "cnn_digits", *overrides)


def test_first_conv_filters_appear_in_tensorboard_as_an_image_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = train_cnn(tmp_path, "train.epochs=1", "log.histograms_every=5")
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    assert events.Tags()["images"] == ["filters/0.weight"]
    image = events.Images("filters/0.weight")[-1]
    assert (image.width, image.height) == (6 * 25 + 1, 6 * 25 + 1)   # 32 filters of 3x3 -> 6 x 6 tiles of 24 + 1
    assert {"weights/0.weight", "grads/1.weight", "activations/3.MaxPool2d"} <= set(events.Tags()["histograms"])


def test_filter_grid_scales_each_filter_to_its_own_range():
    weight = torch.zeros(2, 1, 2, 2)
    weight[0, 0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    weight[1, 0] = torch.tensor([[-9.0, 0.0], [0.0, 9.0]])
    grid = filter_grid(weight, scale=1, pad=1)
    assert grid.shape == (4, 7, 3)                              # 1 row of 2 tiles, 1-pixel grey borders
    assert torch.allclose(grid[1:3, 1:3, 0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    assert grid[1:3, 4:6, 1].tolist() == [[0.0, 0.5], [0.5, 1.0]]
    assert grid[0, 0].tolist() == [0.5, 0.5, 0.5]


@pytest.mark.slow
def test_cnn_digits_config_beats_the_mlp_on_the_test_split(tmp_path):
    result = summary(train_cnn(tmp_path))
    assert result["test/accuracy"] >= 0.985, result


def test_cnn_mnist_config_trains_on_28x28_idx_images(tmp_path):
    from tests.test_data import write_idx_set  # a tiny MNIST-format set

    root = tmp_path / "mnist"
    write_idx_set(root, n_train=40, n_test=10)
    run_dir = train_cnn_config(tmp_path, "cnn_mnist", f"data.root={root}", "train.epochs=1")
    assert "test/accuracy" in summary(run_dir)
