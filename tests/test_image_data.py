"""Image data sets hand images; a model whose first sized layer is a Conv2d gets them as images, an MLP gets
them flattened, and the builder infers channel counts as it infers feature counts."""

import pytest
import torch

import manualnet as mn
from manualnet.config.model import build_model, wants_images
from manualnet.data import load_dataset
from manualnet.errors import ConfigError

CNN = [{"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "BatchNorm2d"},
       {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
       {"type": "Linear", "out_features": 10}]
MLP = [{"type": "Dropout", "p": 0.1}, {"type": "Linear", "out_features": 10}]


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"dataset": "digits"}, seed=0, dtype=torch.float64)


def test_digits_are_one_channel_images_that_flatten_to_the_mlps_64_vectors(digits):
    assert digits.sample_shape == (1, 8, 8) and digits.in_features == 64
    assert "1x8x8 images" in str(digits)
    flat = digits.flattened()
    assert flat.sample_shape == (64,) and flat.in_features == 64
    assert torch.equal(flat.x_test, digits.x_test.reshape(-1, 64))
    assert flat.x_train.data_ptr() == digits.x_train.data_ptr()          # a view, not a copy
    assert flat.standardizer.mean.shape == (64,)


def test_a_model_gets_images_when_its_first_sized_layer_is_a_conv():
    assert wants_images(CNN)
    assert not wants_images(MLP)                       # Dropout is not sized by its input: Linear decides
    assert not wants_images([{"type": "Flatten"}, {"type": "Linear", "out_features": 3}])
    assert not wants_images([{"type": "ReLU"}])


def test_builder_infers_channels_and_batchnorm_features_from_the_image_shape():
    model, out_features = build_model(CNN, (1, 8, 8), seed=0)
    assert (model[0].in_channels, model[1].num_features, model[5].in_features, out_features) == (1, 4, 64, 10)
    assert int(model[1].num_batches_tracked) == 0 and torch.equal(model[1].running_mean, torch.zeros(4))
    assert model.training and model[1].training         # probed in eval mode, handed back for training


def test_builder_names_a_given_channel_count_that_does_not_fit():
    specs = [{**CNN[0], "in_channels": 3}, *CNN[1:]]
    with pytest.raises(ConfigError, match=r"model.0: layer 0 \(Conv2d\) expects in_channels 3, gets 1"):
        build_model(specs, (1, 8, 8), seed=0)


def test_cnn_config_trains_on_images(tmp_path):
    from manualnet.config.load import load_config
    from manualnet.config.setup import build

    config = load_config("configs/cnn_digits.yaml", ["train.epochs=1"])
    setup = build(config, device="cpu")
    assert setup.data.x_train.shape[1:] == (1, 8, 8)
    assert isinstance(setup.model[0], mn.Conv2d) and setup.model[0].in_channels == 1
