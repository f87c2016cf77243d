"""Optimizers, learning-rate schedules and gradient clipping, written without autograd.

Optimizers update ``model.params`` in place from ``model.grads`` with fused ``torch._foreach_*`` ops and
reproduce ``torch.optim`` step for step; schedules set ``optimizer.lr`` before each step.
"""

from manualnet.optim.adam import Adam, AdamW
from manualnet.optim.clip import clip_grad_norm, grad_norm
from manualnet.optim.optimizer import OPTIMIZERS, Optimizer, make_optimizer, register_optimizer
from manualnet.optim.schedules import (
    SCHEDULES,
    ConstantSchedule,
    CosineSchedule,
    ExponentialSchedule,
    MultiStepSchedule,
    Schedule,
    StepSchedule,
    make_schedule,
)
from manualnet.optim.sgd import SGD

__all__ = [
    "OPTIMIZERS", "SCHEDULES", "SGD", "Adam", "AdamW", "ConstantSchedule", "CosineSchedule", "ExponentialSchedule",
    "MultiStepSchedule", "Optimizer", "Schedule", "StepSchedule", "clip_grad_norm", "grad_norm", "make_optimizer",
    "make_schedule", "register_optimizer",
]
