"""Mutation test for the conv net layers: the classic conv and BatchNorm backward bugs, planted in copies of the
real layers inside a small CNN, are each caught by verify, and the correct originals pass."""

import pytest
import torch
import torch.nn.functional as F

import manualnet as mn
from manualnet.verify.command import verify_model


class UnflippedKernel(mn.Conv2d):
    def _input_grad(self, x_shape, dy):
        (kh, kw), (ph, pw) = self.kernel_size, self.padding   # stride 1, dilation 1, one group here
        return F.conv2d(dy, self.weight.transpose(0, 1), padding=(kh - 1 - ph, kw - 1 - pw))   # bug: W not flipped


class ConvBiasPerPixel(mn.Conv2d):
    def backward(self, dy):
        x = self.take_cache()
        self.weight.grad += self._weight_grad(x, dy)
        self.bias.grad += dy.sum((0, 2, 3)) / dy[0, 0].numel()   # bug: averages over pixels instead of summing
        return self._input_grad(x.shape, dy)


class BatchNormMutant(mn.BatchNorm2d):
    """The correct BatchNorm2d backward with one term left out (``drop``)."""

    drop = None

    def backward(self, dy):
        x, mu, istd, _ = self.take_cache()
        istd = istd.view(1, -1, 1, 1)
        xhat = (x - mu.view(1, -1, 1, 1)) * istd
        dbeta, dgamma = dy.sum((0, 2, 3), keepdim=True), (dy * xhat).sum((0, 2, 3), keepdim=True)
        if self.drop != "dgamma":
            self.weight.grad += dgamma.flatten()
        if self.drop != "dbeta":
            self.bias.grad += dbeta.flatten()
        m_count = xhat.numel() // xhat.shape[1]
        scale = istd * self.weight.view(1, -1, 1, 1) / m_count
        mean_term = 0 if self.drop == "mean term" else dbeta
        variance_term = 0 if self.drop == "variance term" else xhat * dgamma
        return scale * (m_count * dy - mean_term - variance_term)


def batchnorm_without(term):
    return type(f"BatchNormWithout{term.title().replace(' ', '')}", (BatchNormMutant,), {"drop": term})


def cnn_with(conv=mn.Conv2d, norm=mn.BatchNorm2d):
    """A float64 conv-ReLU-BN-pool block and a linear head: (5, 2, 4, 4) images -> 4 classes. (The ReLU comes
    before the BN so that the conv's bias matters: a BN right after it removes any per-channel shift, and the
    bias's true gradient is zero, which relative errors cannot judge.)"""
    torch.manual_seed(0)
    model = mn.Sequential(conv(2, 3, 3, padding=1), mn.ReLU(), norm(3), mn.MaxPool2d(2), mn.Flatten(),
                          mn.Linear(12, 4)).to(dtype=torch.float64)
    with torch.no_grad():                        # gamma, beta off 1, 0: a dropped term must change something
        model[2].weight.uniform_(0.5, 1.5)
        model[2].bias.uniform_(-0.5, 0.5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, 4, 4, generator=gen, dtype=torch.float64)
    return model, mn.CrossEntropyLoss(), x, torch.randint(0, 4, (5,), generator=gen)


MUTANTS = [  # (conv class, norm class, the (layer, row) verify must fail)
    (UnflippedKernel, mn.BatchNorm2d, ("0", "dx")),
    (ConvBiasPerPixel, mn.BatchNorm2d, ("0", "dbias")),
    (mn.Conv2d, batchnorm_without("dgamma"), ("2", "dweight")),
    (mn.Conv2d, batchnorm_without("dbeta"), ("2", "dbias")),
    (mn.Conv2d, batchnorm_without("mean term"), ("2", "dx")),
    (mn.Conv2d, batchnorm_without("variance term"), ("2", "dx")),
]


@pytest.mark.parametrize("conv, norm, where", MUTANTS, ids=lambda m: getattr(m, "__name__", None))
def test_planted_conv_net_bug_is_caught(conv, norm, where):
    rows = verify_model(*cnn_with(conv, norm))
    failed = {(r.index, r.tensor) for r in rows if not r.passed}
    assert where in failed, failed
    assert any(r.index is None for r in rows if not r.passed)   # and the end-to-end gradients disagree too


def test_mutants_copy_the_correct_backward_but_for_the_planted_bug():
    rows = verify_model(*cnn_with(mn.Conv2d, batchnorm_without("nothing")), fd=True)
    assert all(r.passed for r in rows), [r for r in rows if not r.passed]


def test_correct_conv_net_passes_with_finite_differences():
    rows = verify_model(*cnn_with(), fd=True)
    assert all(r.passed for r in rows), [r for r in rows if not r.passed]
    assert {r.index for r in rows} >= {"0", "1", "2", "3", "4", "5", "loss", None}
