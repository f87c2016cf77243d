"""The run config: one YAML file, validated by pydantic before any training starts.

Every key is spelled once, here. ``load_config(path, overrides)`` returns a validated ``Config`` or raises a
ConfigError whose message has one line per problem, each naming the key path and what was expected (with
the closest valid name for a typo). Component sections (``model`` items, ``loss``, ``optim``, ``schedule``,
``data``) name a registered ``type``/``dataset`` and pass the other keys to it as keyword arguments; those are
checked in ``manualnet.config.check`` against its constructor: its signature and its own ``problems``.
"""

import re
from functools import partial
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from manualnet.names import COMMON_KEYS

DEVICES = r"auto|cpu|cuda(:\d+)?"  # what `device:` and --device take: the devices manualnet runs on


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Component(BaseModel):
    """A registered thing by name plus its keyword arguments (checked later against its signature)."""

    model_config = ConfigDict(extra="allow")
    type: str


class DataConfig(BaseModel):
    """The data set by name; its keys are checked against the loader's signature, and the fractions' range by
    the split (``data.dataset.fraction_problems``), not here."""

    model_config = ConfigDict(extra="allow")
    dataset: str = COMMON_KEYS["dataset"]
    val_fraction: float = COMMON_KEYS["val_fraction"]
    test_fraction: float = COMMON_KEYS["test_fraction"]
    standardize: bool = COMMON_KEYS["standardize"]


MAX_TIMEOUT_S = 7 * 24 * 3600  # a week: torch.distributed keeps its timeout in milliseconds; 1e300 s overflows
MAX_THREADS = 1024  # OpenMP fails to start 16384 threads, and segfaults at 100000
MAX_CONFIG_BYTES = 1_000_000  # a config is a few kB; megabytes of YAML take PyYAML minutes to load
MAX_NESTING = 64  # sections in sections; PyYAML recurses once per level and overflows Python's stack near 600

# Counts are strict ints (``epochs: true`` or ``epochs: 2.5`` is an error, not 1 or 2) and the numbers
# finite (``grad_clip: .inf`` is an error, not "no clipping").
Count = partial(Field, strict=True)
Finite = partial(Field, allow_inf_nan=False)


class TrainConfig(Section):
    epochs: int = Count(30, ge=1)
    batch_size: int = Count(64, ge=1)
    grad_clip: float | None = Finite(None, gt=0)
    eval_every: int = Count(1, ge=1)
    checkpoint_every: int = Count(1, ge=1)
    checkpoint_interval_s: float = Finite(1.0, ge=0)  # at most one epoch-end checkpoint per this many seconds
    dist_timeout_s: float = Finite(300, gt=0, le=MAX_TIMEOUT_S)  # how long a rank waits for the others (torchrun)
    threads: Literal["auto"] | int = "auto"  # torch's CPU threads (auto: ``threads.cpu_threads``)

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value):
        if value != "auto" and (type(value) is not int or not 1 <= value <= MAX_THREADS):
            raise ValueError(f"expected auto or a number of threads (an integer from 1 to {MAX_THREADS})")
        return value


class LogConfig(Section):
    tensorboard: bool = True
    every: int = Count(10, ge=1)
    histograms_every: int = Count(100, ge=0)


class VerifyConfig(Section):
    every: int = Count(0, ge=0)
    at_start: bool = False


class Config(Section):
    name: str = "run"
    seed: int = Count(0, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    plugins: list[str] = []
    data: DataConfig = DataConfig()
    model: list[Component] = Field(min_length=1)
    loss: Component = Component(type="CrossEntropyLoss")
    optim: Component = Component(type="SGD", lr=0.1)
    schedule: Component = Component(type="constant")
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()
    verify: VerifyConfig = VerifyConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, value):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", value):  # 255: a file name's longest
            raise ValueError("expected a run name (the directory under runs/): up to 255 letters, digits, '.', '_' "
                             "and '-', starting with a letter or digit")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value):
        if not re.fullmatch(DEVICES, value):
            raise ValueError("expected auto, cpu, cuda or cuda:N")
        return value

    def to_dict(self):
        return self.model_dump(mode="json")
