"""Optimizers, learning-rate schedules and gradient clipping, written without autograd.

Optimizers take ``model.parameters()`` (or named parameters, or parameter groups) as ``torch.optim`` does,
update them in place from their ``.grad`` (a few ops per parameter group, on its flat buffers while it has
them) and reproduce ``torch.optim`` step for step (in float32 to the bit, against its per-tensor form, the
CPU's default); schedules set ``optimizer.lr`` before each step.
"""

from manualnet.optim.adam import Adam, AdamW
from manualnet.optim.clip import clip_grad_norm, grad_norm
from manualnet.optim.optimizer import OPTIMIZERS, Optimizer, register_optimizer
from manualnet.optim.schedules import (
    SCHEDULES,
    ConstantSchedule,
    CosineSchedule,
    ExponentialSchedule,
    MultiStepSchedule,
    Schedule,
    StepSchedule,
)
from manualnet.optim.sgd import SGD

__all__ = [
    "OPTIMIZERS", "SCHEDULES", "SGD", "Adam", "AdamW", "ConstantSchedule", "CosineSchedule", "ExponentialSchedule",
    "MultiStepSchedule", "Optimizer", "Schedule", "StepSchedule", "clip_grad_norm", "grad_norm", "register_optimizer",
]
