"""BatchNorm1d and BatchNorm2d against their torch.nn twins: training and eval outputs and gradients, the
running statistics after ten steps, state dict names; finite differences; Dropout2d's channel masks."""

import pytest
import torch

import manualnet as mn
from tests.twins import finite_difference_grads, rel_err, run_twins, seeded

CASES = [  # (manualnet class, torch.nn class, input shape, keyword arguments)
    (mn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 5, 6), {}),
    (mn.BatchNorm2d, torch.nn.BatchNorm2d, (2, 3, 3, 2), {"momentum": None, "eps": 1e-3}),
    (mn.BatchNorm1d, torch.nn.BatchNorm1d, (5, 3), {"momentum": 0.3}),
    (mn.BatchNorm1d, torch.nn.BatchNorm1d, (4, 3, 7), {}),
    (mn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 2, 2), {"affine": False}),
]
IDS = [f"{cls.__name__}-{'x'.join(map(str, shape))}-{kwargs}" for cls, _, shape, kwargs in CASES]


def twins(case, dtype=torch.float64):
    """A manualnet BatchNorm and torch's, with gamma, beta and the running statistics off 1 and 0."""
    ours_cls, theirs_cls, shape, kwargs = case
    ours, theirs = ours_cls(3, **kwargs).to(dtype=dtype), theirs_cls(3, **kwargs).to(dtype)
    with torch.no_grad():
        for i, t in enumerate(ours.parameters()):
            t.copy_(1 + 0.5 * seeded(3, 10 + i, dtype))
        ours.running_mean.copy_(seeded(3, 20, dtype))
        ours.running_var.copy_(seeded(3, 21, dtype).abs() + 0.5)
    return ours, theirs, shape


def scaled_input(shape, seed, dtype=torch.float64):
    """Off-centre, off-scale inputs: the normalisation has something to undo."""
    return 3 * seeded(shape, seed, dtype) + 2


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_matches_torch_autograd_in_float64(case, mode):
    ours, theirs, shape = twins(case)
    ours.train(mode == "train")
    theirs.train(mode == "train")
    got, want = run_twins(ours, theirs, scaled_input(shape, 0))
    assert set(got) == set(want) == {"y", "dx"} | ({"dweight", "dbias"} if case[3].get("affine", True) else set())
    errors = {name: rel_err(got[name], want[name]) for name in want}
    assert max(errors.values()) <= 1e-10, errors


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_batchnorm_matches_torch_autograd_in_float32(case):
    ours, theirs, shape = twins(case, torch.float32)
    got, want = run_twins(ours, theirs, scaled_input(shape, 1, torch.float32))
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_running_statistics_equal_torchs_after_ten_training_steps(case):
    ours, theirs, shape = twins(case)
    theirs.load_state_dict(ours.state_dict())
    for step in range(10):
        x = scaled_input(shape, 100 + step)
        ours(x)
        theirs(x)
    for name, want in theirs.state_dict().items():
        assert torch.allclose(ours.state_dict()[name], want, rtol=1e-12, atol=1e-14), name
    assert int(ours.num_batches_tracked) == 10
    ours.eval()
    theirs.eval()
    x = scaled_input(shape, 200)
    assert rel_err(ours(x), theirs(x).detach()) <= 1e-12      # eval normalises with those statistics


def test_batchnorm_state_dict_has_torchs_keys_and_loads_into_torch():
    ours = mn.BatchNorm2d(4)
    assert list(ours.state_dict()) == list(torch.nn.BatchNorm2d(4).state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    ours(scaled_input((3, 4, 2, 2), 0).float())
    theirs = torch.nn.BatchNorm2d(4)
    theirs.load_state_dict(ours.state_dict())
    assert int(theirs.num_batches_tracked) == 1 and torch.equal(theirs.running_mean, ours.running_mean)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_matches_finite_differences(mode):
    ours, _, shape = twins(CASES[3])
    ours.train(mode == "train")
    manual, numeric = finite_difference_grads(ours, scaled_input(shape, 3))
    assert set(manual) == {"dx", "dweight", "dbias"}
    for name in manual:
        torch.testing.assert_close(manual[name], numeric[name], rtol=1e-6, atol=1e-7, msg=name)


def test_batchnorm_dx_sums_to_zero_per_channel_in_training():
    ours, _, shape = twins(CASES[0])
    ours(scaled_input(shape, 4))
    dx = ours.backward(seeded(shape, 5))
    assert dx.sum((0, 2, 3)).abs().max() < 1e-12   # y ignores a shift of a channel's inputs: the mean term


@pytest.mark.parametrize("layer, shape, message", [
    (lambda: mn.BatchNorm2d(3), (4, 3, 5), r"expects x of shape \(N, C, H, W\) with C = 3, got \(4, 3, 5\)"),
    (lambda: mn.BatchNorm1d(3), (4, 2), r"expects x of shape \(N, C\) or \(N, C, L\) with C = 3, got \(4, 2\)"),
    (lambda: mn.BatchNorm1d(3), (1, 3), "training needs more than one value per channel"),
])
def test_batchnorm_refuses_inputs_it_cannot_normalise(layer, shape, message):
    with pytest.raises(mn.LayerError, match=message):
        layer()(torch.zeros(shape))


def test_dropout2d_zeroes_whole_channels_and_scales_the_rest():
    drop = mn.Dropout2d(0.5, generator=torch.Generator().manual_seed(0))
    x = torch.ones(8, 16, 3, 3, dtype=torch.float64)
    y = drop(x)
    per_channel = y.flatten(2)
    assert set(per_channel.min(2).values.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(per_channel.min(2).values, per_channel.max(2).values)   # one value per channel
    dy = seeded(x.shape, 1)
    assert torch.equal(drop.backward(dy), dy * y)                               # the same mask, scaled
    drop.eval()
    assert drop(x) is x
