"""train.threads: the CPU threads a run trains on, "auto" choosing one for a step too small for more, and no
core another process keeps busy."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

import manualnet as mn
from manualnet.cli.main import main
from manualnet.training import threads
from manualnet.training.threads import SMALL_STEP_FLOPS, cpu_threads, torch_threads
from tests.helpers import config_path

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def mlp(*sizes):
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:], strict=False):
        layers += [mn.Linear(n_in, n_out), mn.ReLU()]
    return mn.Sequential(*layers[:-1])


def test_auto_is_one_thread_below_the_small_step_size_and_the_free_cores_above():
    small, mnist = mlp(2, 64, 64, 3), mlp(784, 512, 256, 10)  # 4,547 and 535,818 parameters
    cores, own = os.cpu_count(), torch.get_num_threads()
    assert cpu_threads("auto", small, 64, CPU, busy=0.0) == 1  # 1.7 MFLOP a step
    assert cpu_threads("auto", mnist, 128, CPU, busy=0.0) == min(own, cores)  # 412 MFLOP: every free core
    assert cpu_threads("auto", mnist, 128, CPU, busy=cores - 1) == 1  # the others' cores are left to them
    assert cpu_threads("auto", mnist, 128, CPU, busy=cores - 1.3) == 1  # a core 30% busy is not free
    assert cpu_threads("auto", mnist, 128, CPU, busy=cores - 1.8) == min(own, 2)  # one 20% busy is
    assert cpu_threads("auto", mnist, 128, CPU, busy=cores + 2) == 1  # at least one
    rows = int(SMALL_STEP_FLOPS // (6 * 4547))  # the last batch size under the limit, and the first over it
    assert (cpu_threads("auto", small, rows, CPU, busy=0.0), cpu_threads("auto", small, rows + 1, CPU, busy=0.0)) \
        == (1, min(own, cores))
    assert cpu_threads(1, mnist, 128, CPU) == 1 and cpu_threads(cores, small, 64, CPU) == cores  # a number is kept
    with pytest.warns(UserWarning, match=f"train.threads {cores + 1} is more than this machine's {cores} cores"):
        assert cpu_threads(cores + 1, mnist, 128, CPU) == cores + 1  # kept, with a word on what it costs
    assert cpu_threads("auto", small, 64, CUDA) is None and cpu_threads(4, small, 64, CUDA) is None


def test_busy_cores_is_the_share_of_the_machine_s_ticks_that_were_not_idle(monkeypatch):
    readings = iter([(100, 1000), (130, 1040)])  # 30 of 40 ticks busy, over all cores
    monkeypatch.setattr(threads, "_cpu_ticks", lambda: next(readings))
    assert threads.busy_cores(0.0) == pytest.approx(os.cpu_count() * 0.75)
    monkeypatch.setattr(threads, "_cpu_ticks", lambda: None)  # no /proc/stat: nothing is known to be busy
    assert threads.busy_cores(0.0) == 0.0


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="busy_cores reads /proc/stat")
def test_busy_cores_sees_another_process_spinning():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # past its start-up
        assert threads.busy_cores(0.5) >= 0.7  # at least the spinning core (other processes only add to it)
    finally:
        spinner.kill()
        spinner.wait()


def test_torch_threads_sets_the_count_inside_the_block_and_restores_it_after():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        raise RuntimeError("a run that stops")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("setting, expected", [("auto", 1), ("3", 3)])
def test_a_run_trains_on_its_threads_says_so_in_its_summary_and_leaves_the_process_as_it_was(tmp_path, setting,
                                                                                              expected):
    before = torch.get_num_threads()
    seen = []
    original = mn.Sequential.backward

    def backward(self, *args, **kwargs):  # the count the training steps run on
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    mn.Sequential.backward = backward
    try:
        assert main(["train", "--config", str(config_path("spirals")), "--run-dir", str(tmp_path / "run"),
                     "--set", "train.epochs=1", "--set", f"train.threads={setting}", "--quiet"]) == 0
    finally:
        mn.Sequential.backward = original
    assert set(seen) == {expected}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["threads"] == expected
    assert torch.get_num_threads() == before


def test_a_resumed_run_keeps_the_thread_count_auto_chose_for_it(tmp_path):
    from manualnet.cli.main import main
    from manualnet.training import checkpoint
    from tests.helpers import config_path

    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config_path("mlp")), "--run-dir", str(run_dir), "--quiet",
                 "--set", "train.epochs=1", "--set", "log.tensorboard=false"]) == 0
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    chosen = state["threads"]
    assert isinstance(chosen, int) and chosen >= 1
    state["threads"] = 7  # as if the first process had picked 7: the resumed one must too
    checkpoint.save(state, run_dir / "checkpoints" / "last.pt")
    assert main(["train", "--resume", str(run_dir), "--set", "train.epochs=2", "--quiet"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["threads"] == 7
