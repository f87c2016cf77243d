import math

import pytest
import torch

from manualnet import Parameter
from manualnet.config.arguments import construct
from manualnet.errors import CheckpointError, ConfigError
from manualnet.optim import SCHEDULES, SGD

# The smallest valid keyword arguments of each registered schedule (one without required arguments needs
# no entry here).
REQUIRED = {"step": {"step_size": 2}, "multistep": {"milestones": [1, 3]}, "exponential": {"gamma": 0.9}}


def sgd(lr=1.0):
    return SGD([Parameter(torch.zeros(2, dtype=torch.float64))], lr=lr)


def make_schedule(name, optimizer, steps_per_epoch, epochs, **kwargs):
    return SCHEDULES.get(name)(optimizer, steps_per_epoch, epochs, **kwargs)


def lrs_seen_by_steps(schedule, steps):
    """The lr each of ``steps`` optimizer steps runs with, as the trainer drives it."""
    seen = []
    for _ in range(steps):
        seen.append(schedule.optimizer.lr)
        schedule.step()
    return seen


def test_registry_holds_the_five_schedules():
    assert SCHEDULES.names() == ["constant", "cosine", "exponential", "multistep", "step"]


@pytest.mark.parametrize(("name", "kwargs", "torch_scheduler"), [
    ("step", {"step_size": 3, "gamma": 0.5}, lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5)),
    ("multistep", {"milestones": [5, 2, 7], "gamma": 0.3},
     lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 7], gamma=0.3)),
    ("exponential", {"gamma": 0.9}, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    ("cosine", {"eta_min": 0.01}, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12, eta_min=0.01)),
    ("constant", {}, lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0)),
])
def test_schedule_matches_torch_lr_scheduler_with_one_step_per_epoch(name, kwargs, torch_scheduler):
    schedule = make_schedule(name, sgd(0.2), steps_per_epoch=1, epochs=12, **kwargs)
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    scheduler = torch_scheduler(reference)
    expected = []
    for _ in range(13):
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        scheduler.step()
    assert lrs_seen_by_steps(schedule, 13) == pytest.approx(expected, rel=1e-12, abs=0)


def test_epoch_schedules_change_only_at_epoch_boundaries():
    schedule = make_schedule("step", sgd(1.0), steps_per_epoch=3, epochs=6, step_size=2, gamma=0.1)
    assert lrs_seen_by_steps(schedule, 18) == pytest.approx([1.0] * 6 + [0.1] * 6 + [0.01] * 6, rel=1e-15)
    schedule = make_schedule("exponential", sgd(1.0), steps_per_epoch=2, epochs=3, gamma=0.5)
    assert lrs_seen_by_steps(schedule, 6) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    schedule = make_schedule("multistep", sgd(1.0), steps_per_epoch=2, epochs=4, milestones=[1, 3], gamma=0.5)
    assert lrs_seen_by_steps(schedule, 8) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_cosine_with_warmup_follows_its_closed_form():
    # 4 steps per epoch, 5 epochs: S = 20 steps; warmup 1.5 epochs: W = 6 steps; cosine over T = 14 steps.
    schedule = make_schedule("cosine", sgd(0.5), steps_per_epoch=4, epochs=5, eta_min=0.1, warmup_epochs=1.5)
    assert schedule.warmup_steps == 6
    assert [schedule.lr_at(s) for s in range(6)] == pytest.approx([0.5 * (s + 1) / 6 for s in range(6)], rel=1e-15)
    assert schedule.lr_at(6) == pytest.approx(0.5, rel=1e-15)
    assert schedule.lr_at(13) == pytest.approx(0.3, rel=1e-15)            # t = T / 2: halfway to eta_min
    t = 3
    assert schedule.lr_at(6 + t) == pytest.approx(0.1 + 0.4 * (1 + math.cos(math.pi * t / 14)) / 2, rel=1e-15)
    assert schedule.lr_at(20) == pytest.approx(0.1, rel=1e-15)
    assert schedule.lr_at(25) == pytest.approx(0.1, rel=1e-15)            # no restart after the run


def test_warmup_starts_at_start_factor_plus_one_step():
    schedule = make_schedule("constant", sgd(2.0), steps_per_epoch=4, epochs=3, warmup_epochs=1,
                             warmup_start_factor=0.2)
    assert lrs_seen_by_steps(schedule, 6) == pytest.approx([2.0 * (0.2 + 0.8 * k / 4) for k in (1, 2, 3, 4)]
                                                           + [2.0, 2.0], rel=1e-15)


def test_warmup_multiplies_epoch_decay():
    schedule = make_schedule("exponential", sgd(1.0), steps_per_epoch=2, epochs=4, gamma=0.5, warmup_epochs=2)
    assert lrs_seen_by_steps(schedule, 6) == pytest.approx([0.25, 0.5, 0.75 * 0.5, 0.5, 0.25, 0.25], rel=1e-15)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_warmup_never_gives_zero_lr_and_ends_at_the_decayed_lr(name):
    schedule = make_schedule(name, sgd(1.0), steps_per_epoch=5, epochs=4, warmup_epochs=1, **REQUIRED.get(name, {}))
    assert schedule.optimizer.lr == pytest.approx(0.2, rel=1e-15)       # (0 + 1) / 5
    assert schedule.lr_at(4) == pytest.approx(schedule.decayed(4), rel=1e-15)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_schedule_state_dict_resumes_the_same_lrs(name):
    kwargs = {"steps_per_epoch": 3, "epochs": 5, "warmup_epochs": 0.5, **REQUIRED.get(name, {})}
    uninterrupted = make_schedule(name, sgd(0.3), **kwargs)
    expected = lrs_seen_by_steps(uninterrupted, 15)
    first = make_schedule(name, sgd(0.3), **kwargs)
    lrs_seen_by_steps(first, 7)
    state = first.state_dict()
    assert state == {"schedule": name, "step_count": 7, "base_lr": 0.3}
    resumed = make_schedule(name, sgd(0.05), **kwargs)   # as if built after loading a decayed optimizer lr
    resumed.load_state_dict(state)
    assert lrs_seen_by_steps(resumed, 8) == expected[7:]


def test_schedule_state_dict_of_another_schedule_is_rejected():
    state = make_schedule("constant", sgd(), 2, 2).state_dict()
    with pytest.raises(CheckpointError, match="is for 'constant', this schedule is 'cosine'"):
        make_schedule("cosine", sgd(), 2, 2).load_state_dict(state)
    with pytest.raises(CheckpointError, match="step_count=-1"):
        make_schedule("constant", sgd(), 2, 2).load_state_dict({**state, "step_count": -1})


@pytest.mark.parametrize(("name", "kwargs", "argument"), [
    ("constant", {"steps_per_epoch": 0}, "steps_per_epoch"),
    ("constant", {"epochs": 2.5}, "epochs"),
    ("constant", {"warmup_epochs": -1}, "warmup_epochs"),
    ("constant", {"warmup_start_factor": 1.5}, "warmup_start_factor"),
    ("step", {"step_size": 0}, "step_size"),
    ("step", {"step_size": 2, "gamma": 0}, "gamma"),
    ("multistep", {"milestones": 3}, "milestones"),
    ("multistep", {"milestones": [1, -2]}, "milestones"),
    ("exponential", {"gamma": -0.5}, "gamma"),
    ("cosine", {"eta_min": -1e-3}, "eta_min"),
])
def test_invalid_schedule_argument_is_a_config_error_naming_it(name, kwargs, argument):
    kwargs = {"steps_per_epoch": 2, "epochs": 4, **kwargs}
    with pytest.raises(ConfigError, match=rf"argument {argument}="):
        make_schedule(name, sgd(), **kwargs)


def test_schedule_from_a_config_names_unknown_type_and_argument():
    def build(name, **kwargs):
        fixed = {"optimizer": sgd(), "steps_per_epoch": 2, "epochs": 2}
        return construct(SCHEDULES.get(name, where="schedule.type"), kwargs, "schedule", fixed=fixed)

    with pytest.raises(ConfigError, match="unknown schedule 'cosin' \\(did you mean 'cosine'\\?\\)"):
        build("cosin")
    with pytest.raises(ConfigError, match="schedule.warmup: unknown argument \\(did you mean 'warmup_epochs'"):
        build("cosine", warmup=1)
    with pytest.raises(ConfigError, match="schedule.step_size: required argument is missing"):
        build("step")


def test_warmup_longer_than_the_run_warms_up_the_whole_run():
    schedule = make_schedule("cosine", sgd(1.0), steps_per_epoch=2, epochs=1, warmup_epochs=1)
    assert [schedule.lr_at(s) for s in range(3)] == [0.5, 1.0, 1.0]
