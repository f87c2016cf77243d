"""Everything a run needs, built from a validated config: device, data, model, loss, optimizer, schedule.

``train``, ``eval`` and ``verify`` all start here, so they see the same model on the same data.
"""

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from manualnet.config.arguments import construct
from manualnet.config.model import build_loss, build_model, loss_targets, spec_kwargs, wants_images
from manualnet.config.plugins import load_plugins
from manualnet.config.schema import DEVICES
from manualnet.data import load_dataset
from manualnet.errors import ConfigError
from manualnet.nn import CrossEntropyLoss, NLLLoss, Softmax
from manualnet.optim import OPTIMIZERS, SCHEDULES


@dataclass
class Setup:
    config: object
    device: torch.device
    dtype: torch.dtype
    data: object
    model: object
    loss: object
    targets: dict  # split -> what the loss compares with (labels, one-hot rows, or regression targets)
    optimizer: object
    schedule: object

    @property
    def classification(self):
        return self.data.task == "classification"

    @property
    def threshold(self):
        """Decision threshold of a single binary output: 0 for logits, 0.5 for probabilities."""
        return 0.0 if type(self.loss).__name__ == "BCEWithLogitsLoss" else 0.5

    def split(self, name):
        """(x, loss targets, labels) of the split ``train``, ``val`` or ``test``."""
        x, labels = getattr(self.data, f"x_{name}"), getattr(self.data, f"y_{name}")
        return x, self.targets[name], labels


def resolve_device(requested):
    """``auto`` -> CUDA when present, else CPU; a CUDA device that is not there is a ConfigError. Under
    torchrun on CUDA, each rank uses the GPU of its LOCAL_RANK."""
    device = _requested_device(requested)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _requested_device(requested):
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"device: {requested!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if not re.fullmatch(DEVICES, requested):  # mps, xla, cpu:0, ...: torch knows them, manualnet takes none
        raise ConfigError(f"device: {requested!r} is not supported; expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {requested!r} was asked for, but CUDA is not available on this machine "
                              f"(torch {torch.__version__}); use --device cpu (or device: cpu or auto in the config)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {requested!r} does not exist; this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def _absolute_data_path(config, base_dir):
    """``data.path`` (a file) and ``data.root`` (a folder), relative to the working directory (else to
    ``base_dir``), made absolute in the config, so the run's saved config.yaml finds them again from
    anywhere (``--resume``, ``evaluate``)."""
    for key in ("path", "root"):
        value = getattr(config.data, key, None)
        if not isinstance(value, str) or Path(value).expanduser().is_absolute():
            continue
        candidate = Path(value).expanduser()
        if not candidate.exists() and base_dir is not None and (Path(base_dir) / candidate).exists():
            candidate = Path(base_dir) / candidate
        setattr(config.data, key, str(candidate.resolve()))


def build(config, device=None, base_dir=None):
    """A Setup for ``config``; ``device`` overrides ``config.device`` (and is recorded there, as a run's
    config.yaml then shows)."""
    config.plugins = load_plugins(config.plugins, base_dir)
    _absolute_data_path(config, base_dir)
    device = None if device is None else str(device)  # a torch.device too, as torch takes one
    resolved = resolve_device(device or config.device)
    config.device, device = device or config.device, resolved
    dtype = getattr(torch, config.dtype)
    data = load_dataset(config.data.model_dump(), seed=config.seed, device=device, dtype=dtype)
    raw = config.to_dict()
    if not wants_images(raw["model"]):
        data = data.flattened()
    model, out_features = build_model(raw["model"], data.sample_shape, config.seed, device, dtype,
                                      probe=data.x_train[:2], sizes=data.inferred_sizes())
    loss = build_loss(raw["loss"], out_features, data)
    _warn_about_the_head(model, loss)
    targets = {split: loss_targets(raw["loss"]["type"], getattr(data, f"y_{split}"), out_features, dtype)
               for split in ("train", "val", "test")}
    optimizer = build_optimizer(config, model)
    steps_per_epoch = math.ceil(len(data.x_train) / config.train.batch_size)
    schedule = build_schedule(config, optimizer, steps_per_epoch)
    return Setup(config, device, dtype, data, model, loss, targets, optimizer, schedule)


def _warn_about_the_head(model, loss):
    """A learner's classic slip: a Softmax as the last layer before a loss that applies (log-)softmax itself
    or wants log-probabilities. It trains, badly, so it is a warning, not an error."""
    last = len(model) - 1
    if last < 0 or not isinstance(model[last], Softmax):
        return
    if isinstance(loss, CrossEntropyLoss):
        warnings.warn(f"model.{last}: a Softmax right before CrossEntropyLoss applies softmax twice (the loss takes "
                      "logits and applies its own); remove the Softmax", UserWarning, stacklevel=3)
    elif isinstance(loss, NLLLoss):
        warnings.warn(f"model.{last}: NLLLoss takes log-probabilities, and a Softmax gives probabilities; use "
                      "LogSoftmax (or drop it and use CrossEntropyLoss)", UserWarning, stacklevel=3)


def build_optimizer(config, model):
    spec = config.to_dict()["optim"]
    cls = OPTIMIZERS.get(spec["type"], where="optim.type")
    return construct(cls, spec_kwargs(spec), "optim", fixed={"params": model.named_parameters()})


def build_schedule(config, optimizer, steps_per_epoch):
    spec = config.to_dict()["schedule"]
    cls = SCHEDULES.get(spec["type"], where="schedule.type")
    fixed = {"optimizer": optimizer, "steps_per_epoch": steps_per_epoch, "epochs": config.train.epochs}
    return construct(cls, spec_kwargs(spec), "schedule", fixed=fixed)
