"""Shared fixtures: a case (constructor arguments, inputs) for every registered layer and loss, and a ``cuda``
marker that skips where no GPU is present.

A test that takes ``layer_name`` (or ``layer_case``) runs once per entry of ``manualnet.LAYERS``, one that takes
``loss_name`` (or ``loss_case``) once per entry of ``manualnet.LOSSES``: a newly registered layer is checked
without anyone remembering to add it. Built-ins whose constructor needs arguments, or whose inputs are special
(probabilities, class indices), have an entry below; any other name gets a sensible default.
"""

import inspect
import signal

import pytest
import torch
import torch.nn.functional as F

from manualnet import LAYERS, LOSSES
from manualnet.data.base import DATASETS
from manualnet.nn.init import INITS
from manualnet.optim.optimizer import OPTIMIZERS
from manualnet.optim.schedules import SCHEDULES

CUDA = torch.cuda.is_available()


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")


def pytest_collection_modifyitems(config, items):
    if CUDA:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU here")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def registries_as_shipped():
    """Plugins a test loads (in-process CLI runs, ``@register_layer`` in a test) leave the registries as they
    were: a later test that walks the registry (``verify --all-layers``) sees only what the library ships."""
    tables = (LAYERS, LOSSES, OPTIMIZERS, SCHEDULES, DATASETS, INITS)
    saved = [dict(table.entries) for table in tables]
    yield
    for table, entries in zip(tables, saved, strict=True):
        table.entries.clear()
        table.entries.update(entries)


@pytest.fixture(autouse=True)
def torch_threads_as_found():
    """A test that sets torch's thread count (the benchmarks' ``--threads``) leaves it as it found it: a later
    ``threads: auto`` run would otherwise inherit it."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def signal_handlers_as_found():
    """An in-process CLI run interrupted by a test leaves SIGINT and SIGTERM exiting at once (as a process that
    is stopping should): put back what the test found, or a later test's signal would end pytest."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def pytest_generate_tests(metafunc):
    if "layer_name" in metafunc.fixturenames:
        metafunc.parametrize("layer_name", LAYERS.names())
    if "loss_name" in metafunc.fixturenames:
        metafunc.parametrize("loss_name", LOSSES.names())


def randn(shape, seed, dtype=torch.float64, device="cpu"):
    """Seeded standard normal numbers, drawn in float64 so every dtype and device sees the same values."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device, dtype)


class LayerCase:
    """How to build a registered layer for tests and what to feed it."""

    takes_ids = False  # a layer whose input is integer token ids has no dx and refuses floats instead

    def __init__(self, name, kwargs=None, shape=(4, 5)):
        self.name, self.shape = name, shape
        self.kwargs = kwargs or (lambda device: {})

    def make(self, dtype=torch.float64, device="cpu"):
        return LAYERS.get(self.name)(**self.kwargs(device)).to(device=device, dtype=dtype)

    def input(self, seed=0, dtype=torch.float64, device="cpu", shape=None):
        return randn(shape or self.shape, seed, dtype, device)

    def inputs(self, seed=0, dtype=torch.float64, device="cpu"):
        return (self.input(seed, dtype, device),)


class ExampleCase(LayerCase):
    """A module that builds its own example (``cls.example(generator)``): arguments, and inputs of any number."""

    def __init__(self, name):
        self.name, self.cls = name, LAYERS.get(name)
        self.shape = self.inputs()[0].shape
        self.takes_ids = not self.inputs()[0].is_floating_point()   # Embedding, GPT: integer token ids

    def make(self, dtype=torch.float64, device="cpu"):
        return self.cls.example(torch.Generator().manual_seed(0))[0].to(device=device, dtype=dtype)

    def inputs(self, seed=0, dtype=torch.float64, device="cpu"):
        _, inputs = self.cls.example(torch.Generator().manual_seed(seed))
        return tuple(x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype) for x in inputs)

    def input(self, seed=0, dtype=torch.float64, device="cpu", shape=None):
        inputs = self.inputs(seed, dtype, device)
        if len(inputs) != 1 or shape is not None:
            pytest.skip(f"{self.name} takes {len(inputs)} inputs of its own shapes; checked through inputs()")
        return inputs[0]


LAYER_CASES = {
    "Linear": LayerCase("Linear", lambda device: {"in_features": 5, "out_features": 3}),
    "Dropout": LayerCase("Dropout", lambda device: {"p": 0.4, "generator": torch.Generator(device).manual_seed(7)}),
    "LeakyReLU": LayerCase("LeakyReLU", lambda device: {"negative_slope": 0.2}),
    "Flatten": LayerCase("Flatten", shape=(4, 2, 3)),
    "LogSoftmax": LayerCase("LogSoftmax", lambda device: {"dim": 1}),
}


def layer_case_for(name):
    """The case of a built-in, or a default: sizes 5 -> 3 for a constructor that asks for features."""
    if name in LAYER_CASES:
        return LAYER_CASES[name]
    if hasattr(LAYERS.get(name), "example"):
        return ExampleCase(name)
    wanted = inspect.signature(LAYERS.get(name).__init__).parameters
    sizes = {key: size for key, size in (("in_features", 5), ("out_features", 3)) if key in wanted}
    return LayerCase(name, lambda device: dict(sizes))


class LossCase:
    """How to build a registered loss and a (pred, target) pair for it.

    ``count`` is what the mean divides by: every element, or (class-index losses) every sample.
    ``extreme`` makes a pred at the edges of the loss's domain (by default logits of about +-1e4).
    """

    def __init__(self, name, pred=None, target=None, count="elements", extreme=None):
        self.name, self.count = name, count
        self._pred = pred or (lambda seed: randn((4, 3), seed))
        self._target = target or (lambda seed, pred: randn(pred.shape, seed + 1000))
        self._extreme = extreme or _extreme_logits

    def make(self, **kwargs):
        return LOSSES.get(self.name)(**kwargs)

    def data(self, seed=0, dtype=torch.float64, device="cpu"):
        pred = self._pred(seed)
        target = self._target(seed, pred)
        target = target.to(dtype) if target.is_floating_point() else target
        return pred.to(device, dtype), target.to(device)

    def extreme_data(self, dtype=torch.float64):
        """(pred, target) with pred at the edges of the domain, target as ``data`` draws it."""
        pred = self._extreme(self._pred(0).shape).to(dtype)
        target = self._target(0, pred)
        return pred, target.to(dtype) if target.is_floating_point() else target

    def divisor(self, pred):
        return pred.numel() if self.count == "elements" else pred.shape[0]


def _uniform(shape, seed, low, high):
    return low + (high - low) * torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


EXTREME_LOGITS = (1e4, -1e4, 0.5, 1e4 - 1.0, -1e4 + 3.0, -0.25, 1e4)  # exp overflows, sigmoid rounds to 0 or 1


def _extreme_logits(shape):
    numel = shape.numel()
    return torch.tensor(EXTREME_LOGITS * numel, dtype=torch.float64)[:numel].reshape(shape)


def _extreme_probabilities(shape):
    """Probabilities at and next to 0 and 1, where log(p) and 1 / p blow up."""
    numel = shape.numel()
    return torch.tensor((0.0, 1.0, 1e-30, 1 - 1e-12, 0.5, 1e-12) * numel, dtype=torch.float64)[:numel].reshape(shape)


def _classes(seed, pred):
    return torch.randint(0, pred.shape[1], (pred.shape[0],), generator=torch.Generator().manual_seed(seed + 1000))


LOSS_CASES = {
    "BCELoss": LossCase("BCELoss", pred=lambda seed: _uniform((4, 3), seed, 0.05, 0.95),
                        target=lambda seed, pred: _uniform(pred.shape, seed + 1000, 0.0, 1.0),
                        extreme=_extreme_probabilities),
    "BCEWithLogitsLoss": LossCase("BCEWithLogitsLoss",
                                  target=lambda seed, pred: _uniform(pred.shape, seed + 1000, 0.0, 1.0)),
    "CrossEntropyLoss": LossCase("CrossEntropyLoss", pred=lambda seed: randn((4, 5), seed), target=_classes,
                                 count="samples"),
    "NLLLoss": LossCase("NLLLoss", pred=lambda seed: F.log_softmax(randn((4, 5), seed), 1), target=_classes,
                        count="samples", extreme=lambda shape: F.log_softmax(_extreme_logits(shape), 1)),
}


def loss_case_for(name):
    return LOSS_CASES.get(name) or LossCase(name)


@pytest.fixture
def layer_case(layer_name):
    return layer_case_for(layer_name)


@pytest.fixture
def loss_case(loss_name):
    return loss_case_for(loss_name)
