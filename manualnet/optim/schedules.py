"""Learning-rate schedules: the lr of step s is a pure function of s, so resuming needs only s.

Every schedule is ``lr(s) = w(s) * decayed(s)`` for steps s = 0, 1, ... (``s`` optimizer steps done so far),
with an optional linear warmup over W = round(warmup_epochs * steps_per_epoch) steps::

    w(s) = f0 + (1 - f0) * (s + 1) / W    for s < W     (f0 = warmup_start_factor; never 0 at s = 0)
    w(s) = 1                              for s >= W

``decayed(s)`` is the schedule's own formula from the base lr (the optimizer's lr when the schedule is made),
written in each class's docstring; epoch-based ones use the epoch e = s // steps_per_epoch, so their lr
changes at epoch boundaries. Building a schedule sets ``optimizer.lr = lr(0)``; ``step()``, called once
after each optimizer step, sets ``optimizer.lr = lr(s)`` for the next one.
"""

import math

from manualnet.errors import CheckpointError
from manualnet.registry import Registry, expect, is_count, is_finite_nonnegative, is_finite_positive, is_number, refuse

SCHEDULES = Registry("schedule")


class Schedule:
    """Base class: subclasses implement ``decayed(step)``, the lr without warmup.

    Args:
        optimizer: anything with a writable ``lr``; its lr now is the base lr.
        steps_per_epoch, epochs: the run's length (positive ints); S = steps_per_epoch * epochs steps.
        warmup_epochs: length of the linear warmup in epochs (a float is fine), W < S steps once rounded.
        warmup_start_factor: f0 in [0, 1], the warmup's starting fraction of the lr.
    A subclass sets its own arguments (named in ``DECAY``) as attributes before calling this ``__init__``,
    which checks them all with ``problems``.
    """

    DECAY = ()

    def __init__(self, optimizer, steps_per_epoch, epochs, warmup_epochs=0.0, warmup_start_factor=0.0):
        args = {"steps_per_epoch": steps_per_epoch, "epochs": epochs, "warmup_epochs": warmup_epochs,
                "warmup_start_factor": warmup_start_factor, **{key: getattr(self, key) for key in self.DECAY}}
        refuse(self, args, self.problems(args))
        self.optimizer = optimizer
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.total_steps = steps_per_epoch * epochs
        # A warmup as long as the run (a short smoke test of a long config) warms up the whole run.
        self.warmup_steps = round(warmup_epochs * steps_per_epoch)
        self.warmup_start_factor = warmup_start_factor
        self.base_lr = optimizer.lr
        self.step_count = 0
        optimizer.lr = self.lr_at(0)

    @classmethod
    def problems(cls, args):
        """``[(name, expected), ...]`` for the arguments in ``args`` out of range; raises nothing."""
        found = []
        for key in ("steps_per_epoch", "epochs"):
            found += expect(args, key, is_count, "an int > 0")
        found += expect(args, "warmup_epochs", is_finite_nonnegative, "a finite number >= 0")
        return found + expect(args, "warmup_start_factor", lambda f: is_number(f) and 0 <= f <= 1, "a number in [0, 1]")

    def step(self):
        """Count one optimizer step and set the lr of the next."""
        self.step_count += 1
        self.optimizer.lr = self.lr_at(self.step_count)

    def lr_at(self, step):
        """lr(step) = w(step) * decayed(step), for step >= 0."""
        return self.warmup_factor(step) * self.decayed(step)

    def warmup_factor(self, step):
        if step >= self.warmup_steps:
            return 1.0
        f0 = self.warmup_start_factor
        return f0 + (1 - f0) * (step + 1) / self.warmup_steps

    def decayed(self, step):
        raise NotImplementedError(f"{type(self).__name__} does not implement decayed")

    def epoch(self, step):
        return step // self.steps_per_epoch

    def state_dict(self):
        return {"schedule": type(self).registered_name, "step_count": self.step_count, "base_lr": self.base_lr}

    def load_state_dict(self, state_dict):
        """Restore the step count and base lr, and set the optimizer's lr for the next step."""
        kind = type(self).registered_name
        if not isinstance(state_dict, dict) or state_dict.get("schedule") != kind:
            got = state_dict.get("schedule") if isinstance(state_dict, dict) else type(state_dict).__name__
            raise CheckpointError(f"schedule state dict is for {got!r}, this schedule is {kind!r}")
        steps, base_lr = state_dict.get("step_count"), state_dict.get("base_lr")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise CheckpointError(f"{kind} schedule state dict: step_count={steps!r}, expected an int >= 0")
        if not is_number(base_lr) or not 0 <= base_lr < math.inf:
            raise CheckpointError(f"{kind} schedule state dict: base_lr={base_lr!r}, expected a number >= 0")
        self.step_count, self.base_lr = steps, base_lr
        self.optimizer.lr = self.lr_at(steps)

    def __repr__(self):
        return (f"{type(self).__name__}(base_lr={self.base_lr}, steps={self.step_count}/{self.total_steps}, "
                f"warmup_steps={self.warmup_steps})")


@SCHEDULES.register("constant")
class ConstantSchedule(Schedule):
    """decayed(s) = base_lr."""

    def decayed(self, step):
        return self.base_lr


@SCHEDULES.register("step")
class StepSchedule(Schedule):
    """decayed(s) = base_lr * gamma ** (e // step_size), e = s // steps_per_epoch (torch's StepLR).

    Args: as Schedule, and step_size: epochs between decays (an int > 0); gamma: the decay factor (> 0).
    """

    DECAY = ("step_size", "gamma")

    def __init__(self, optimizer, steps_per_epoch, epochs, step_size, gamma=0.1, warmup_epochs=0.0,
                 warmup_start_factor=0.0):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, steps_per_epoch, epochs, warmup_epochs, warmup_start_factor)

    @classmethod
    def problems(cls, args):
        return (super().problems(args) + expect(args, "step_size", is_count, "an int > 0 (epochs)")
                + expect(args, "gamma", is_finite_positive, "a finite number > 0"))

    def decayed(self, step):
        return self.base_lr * self.gamma ** (self.epoch(step) // self.step_size)


@SCHEDULES.register("multistep")
class MultiStepSchedule(Schedule):
    """decayed(s) = base_lr * gamma ** #{m in milestones : m <= e}, e = s // steps_per_epoch (MultiStepLR).

    Args: as Schedule, and milestones: the epochs (ints >= 0) at which the lr is multiplied by gamma (> 0).
    """

    DECAY = ("milestones", "gamma")

    def __init__(self, optimizer, steps_per_epoch, epochs, milestones, gamma=0.1, warmup_epochs=0.0,
                 warmup_start_factor=0.0):
        self.milestones, self.gamma = milestones, gamma
        super().__init__(optimizer, steps_per_epoch, epochs, warmup_epochs, warmup_start_factor)

    @classmethod
    def problems(cls, args):
        return (super().problems(args)
                + expect(args, "milestones", lambda ms: isinstance(ms, (list, tuple)) and all(
                    isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in ms),
                    "a list of epochs (ints >= 0)")
                + expect(args, "gamma", is_finite_positive, "a finite number > 0"))

    def decayed(self, step):
        epoch = self.epoch(step)
        return self.base_lr * self.gamma ** sum(m <= epoch for m in self.milestones)


@SCHEDULES.register("exponential")
class ExponentialSchedule(Schedule):
    """decayed(s) = base_lr * gamma ** e, e = s // steps_per_epoch (torch's ExponentialLR).

    Args: as Schedule, and gamma: the decay factor per epoch (> 0).
    """

    DECAY = ("gamma",)

    def __init__(self, optimizer, steps_per_epoch, epochs, gamma, warmup_epochs=0.0,
                 warmup_start_factor=0.0):
        self.gamma = gamma
        super().__init__(optimizer, steps_per_epoch, epochs, warmup_epochs, warmup_start_factor)

    @classmethod
    def problems(cls, args):
        return super().problems(args) + expect(args, "gamma", is_finite_positive, "a finite number > 0")

    def decayed(self, step):
        return self.base_lr * self.gamma ** self.epoch(step)


@SCHEDULES.register("cosine")
class CosineSchedule(Schedule):
    """Cosine annealing from base_lr to eta_min over the steps after the warmup, smooth per step::

        decayed(s) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T)) / 2,
        t = min(max(s - W, 0), T),  T = S - W

    so the lr is base_lr (times the warmup) until step W, and eta_min from step S on (torch's
    CosineAnnealingLR with T_max = T, without its restart after T).

    Args: as Schedule, and eta_min: the final lr (>= 0).
    """

    DECAY = ("eta_min",)

    def __init__(self, optimizer, steps_per_epoch, epochs, eta_min=0.0, warmup_epochs=0.0,
                 warmup_start_factor=0.0):
        self.eta_min = eta_min
        super().__init__(optimizer, steps_per_epoch, epochs, warmup_epochs, warmup_start_factor)

    @classmethod
    def problems(cls, args):
        return super().problems(args) + expect(args, "eta_min", is_finite_nonnegative, "a finite number >= 0")

    def decayed(self, step):
        T = self.total_steps - self.warmup_steps
        if T <= 0:
            return self.base_lr
        t = min(max(step - self.warmup_steps, 0), T)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / T)) / 2
