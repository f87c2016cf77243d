"""train.threads: the CPU threads a run trains on, "auto" choosing one for a step too small for more."""

import json

import pytest
import torch

import manualnet as mn
from manualnet.cli import main
from manualnet.threads import SMALL_STEP_FLOPS, cpu_threads, torch_threads
from tests.helpers import config_path

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def mlp(*sizes):
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:], strict=False):
        layers += [mn.Linear(n_in, n_out), mn.ReLU()]
    return mn.Sequential(*layers[:-1])


def test_auto_is_one_thread_below_the_small_step_size_and_torchs_own_count_above():
    small, mnist = mlp(2, 64, 64, 3), mlp(784, 512, 256, 10)  # 4,547 and 535,818 parameters
    assert cpu_threads("auto", small, 64, CPU) == 1  # 1.7 MFLOP a step
    assert cpu_threads("auto", mnist, 128, CPU) is None  # 412 MFLOP: as many threads as torch runs
    rows = int(SMALL_STEP_FLOPS // (6 * 4547))  # the last batch size under the limit, and the first over it
    assert (cpu_threads("auto", small, rows, CPU), cpu_threads("auto", small, rows + 1, CPU)) == (1, None)
    assert cpu_threads(3, mnist, 128, CPU) == 3 and cpu_threads(2, small, 64, CPU) == 2  # a number is kept
    assert cpu_threads("auto", small, 64, CUDA) is None and cpu_threads(4, small, 64, CUDA) is None


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
