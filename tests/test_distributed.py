"""Data-parallel training: 2 processes on localhost (gloo) against 1, launched as torchrun launches them.

Each rank is ``python -m manualnet train`` with the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); one test goes through torchrun itself. The model has no Dropout: a mask per
shard cannot match the mask one process draws for the whole batch. Batches of 45 rows split
unevenly (23 + 22) and the last one is smaller (42), so the n_r / N weighting is exercised on every step.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from functools import partial

import pytest
import torch
import yaml

from manualnet.training.distributed import rank_failed, restore_rng, shard_weight
from tests.helpers import ROOT, metrics, start_cli, summary

CONFIG = {
    "name": "dp", "seed": 0, "data": {"dataset": "digits"},
    "model": [{"type": "Linear", "out_features": 32}, {"type": "ReLU"}, {"type": "Linear", "out_features": 10}],
    "optim": {"type": "SGD", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1.0e-4},
    "schedule": {"type": "constant"},  # a resumed run may change train.epochs; a constant schedule ignores it
    "train": {"epochs": 2, "batch_size": 45},
    "log": {"tensorboard": False, "every": 1, "histograms_every": 0},
}
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(world_size, *args, cwd):
    """``manualnet ARGS`` as ``world_size`` processes of one job (one plain process when world_size is 1)."""
    if world_size == 1:
        return [start_cli(*args, cwd=cwd, env={"OMP_NUM_THREADS": "1"})]
    job = {"WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    return [start_cli(*args, cwd=cwd, env={**job, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(world_size)]


def start_torchrun(*args, cwd):
    """``torchrun --standalone --nproc_per_node 2 -m manualnet ARGS``: one process, the launcher."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "manualnet", *map(str, args)]
    return [subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})]


def wait_all(procs, timeout=120):
    """[(exit code, stdout, stderr)] of each process."""
    outputs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]


def succeeded(procs):
    results = wait_all(procs)
    for rank, (code, _, err) in enumerate(results):
        assert code == 0, f"process {rank}: {err}"
    return results


def train(world_size, run_dir, *args):
    return succeeded(start_ranks(world_size, "train", "--run-dir", run_dir, "--quiet", *args, cwd=run_dir.parent))


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def max_difference(a, b):
    return max((weights(a)[k] - weights(b)[k]).abs().max().item() for k in weights(a))


def started_training(run_dir):
    path = run_dir / "metrics.jsonl"
    return path.exists() and path.stat().st_size > 0


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the ranks"
        time.sleep(0.002)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    paths = {}
    for dtype in TOLERANCE:
        paths[dtype] = folder / f"{dtype}.yaml"
        paths[dtype].write_text(yaml.safe_dump({**CONFIG, "dtype": dtype}))
    return paths


@pytest.fixture(scope="module")
def runs(configs, tmp_path_factory):
    """name -> run dir of every finished run the tests compare, all started at once (their start-up, mostly
    importing torch, then keeps both cores busy). ``one``/``two``: 1 process / 2 ranks, 2 epochs; the float32
    pair goes through torchrun itself and logs TensorBoard, as its single-process twin does. ``one-epoch``
    (float64, 1 epoch) is for a resume test to continue; ``torchrun stdout`` is what torchrun printed."""
    plans = {  # name: (how to start it, dtype, extra arguments)
        "one-float32": (partial(start_ranks, 1), "float32", "--set", "log.tensorboard=true"),
        "one-float64": (partial(start_ranks, 1), "float64"),
        "one-epoch": (partial(start_ranks, 1), "float64", "--set", "train.epochs=1"),
        "two-float64": (partial(start_ranks, 2), "float64"),
        "two-float32": (start_torchrun, "float32", "--set", "log.tensorboard=true"),
    }
    dirs, started = {}, {}
    for name, (start, dtype, *extra) in plans.items():
        dirs[name] = tmp_path_factory.mktemp(name) / "run"
        started[name] = start("train", "--config", configs[dtype], "--run-dir", dirs[name], "--quiet", *extra,
                              cwd=dirs[name].parent)
    outputs = {name: succeeded(procs) for name, procs in started.items()}
    dirs["torchrun stdout"] = outputs["two-float32"][0][1]
    return dirs


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_two_processes_end_with_the_weights_of_one(dtype, runs):
    alone, ranks = runs[f"one-{dtype}"], runs[f"two-{dtype}"]
    assert max_difference(alone, ranks) <= TOLERANCE[dtype]
    assert summary(ranks)["steps"] == summary(alone)["steps"] == 2 * 28


def test_rank_0_alone_logs_the_global_metrics(runs):
    alone, ranks = runs["one-float32"], runs["two-float32"]
    assert [p.name for p in ranks.parent.iterdir()] == ["run"]  # no stray run directory from rank 1
    assert len(list(ranks.glob("events.out.tfevents.*"))) == 1
    assert runs["torchrun stdout"].count("test/accuracy") == 1  # one summary table
    ours, theirs = metrics(ranks), metrics(alone)
    assert [m["step"] for m in ours] == [m["step"] for m in theirs]
    for mine, single in zip(ours, theirs, strict=True):
        for key in ("train/loss_step", "train/accuracy_step", "train/loss", "train/accuracy", "val/loss",
                    "val/accuracy", "grad_norm"):
            if key in single:
                assert mine[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), (mine["step"], key)
    assert summary(ranks)["test/accuracy"] == summary(alone)["test/accuracy"]


def test_interrupting_one_rank_stops_both_at_one_step_and_one_process_resumes(configs, runs, tmp_path):
    run_dir = tmp_path / "run"  # histograms every step on rank 0 slow the run: the signal lands mid-run
    procs = start_ranks(2, "train", "--config", configs["float64"], "--run-dir", run_dir, "--set",
                        "log.tensorboard=true", "--set", "log.histograms_every=1", cwd=tmp_path)
    wait_for(lambda: started_training(run_dir))
    procs[0].send_signal(signal.SIGTERM)  # rank 1 gets no signal: it stops because rank 0 asked
    (code0, _, err0), (code1, _, err1) = wait_all(procs)
    assert (code0, code1) == (143, 143), err0 + err1
    assert f"Resume with: manualnet train --resume {run_dir}" in err0 and "Resume" not in err1
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert 0 < state["step"] < 2 * 28 and len(state["rng_ranks"]) == 1
    train(1, run_dir, "--resume", run_dir, "--set", "log.histograms_every=0")
    assert max_difference(run_dir, runs["one-float64"]) <= TOLERANCE["float64"]
    assert summary(run_dir)["steps"] == 2 * 28


def test_a_run_started_in_one_process_resumes_on_two(runs):
    run_dir = runs["one-epoch"]
    train(2, run_dir, "--resume", run_dir, "--set", "train.epochs=2")
    assert max_difference(run_dir, runs["one-float64"]) <= TOLERANCE["float64"]
    assert [m["epoch"] for m in metrics(run_dir) if "val/loss" in m] == [1, 2]


def test_a_rank_that_dies_or_hangs_stops_the_other_with_one_line(configs, tmp_path):
    timeout = 3
    jobs = {}  # failure -> (run dir, processes); both jobs run at once
    try:
        # one job's ranks join at a time: 4 importing torch on 2 cores could leave one rank a timeout behind
        for failure in ("dies", "hangs"):
            run_dir = tmp_path / failure / "run"
            jobs[failure] = run_dir, start_ranks(2, "train", "--config", configs["float32"], "--run-dir", run_dir,
                                                 "--quiet", "--set", "train.epochs=100000",
                                                 "--set", f"train.dist_timeout_s={timeout}", cwd=tmp_path)
            wait_for(lambda run_dir=run_dir: started_training(run_dir))
        for failure, (_, procs) in jobs.items():
            procs[1].send_signal(signal.SIGKILL if failure == "dies" else signal.SIGSTOP)
        stopped = time.monotonic()
        survivors = {failure: wait_all(procs[:1], timeout=timeout + 30)[0] for failure, (_, procs) in jobs.items()}
        assert time.monotonic() - stopped < timeout + 10
    finally:
        for _, procs in jobs.values():
            procs[1].kill()
            procs[1].communicate()
    for failure, (code, _, err) in survivors.items():
        assert code == 1, (failure, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (failure, err)
        # whichever collective came next: a step's all-reduce, or the rng all_gather of an epoch-end checkpoint
        assert re.match(r"manualnet: error: rank 0: (the all_reduce of the (gradients|step's numbers)|an all_gather"
                        r"|a broadcast from rank 0) failed: ", lines[0])
        assert f"another rank died, or did not answer within train.dist_timeout_s = {timeout} s" in lines[0]


# -- in one process: the pieces the ranks rely on ----------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_weighted_shard_gradients_make_up_the_global_batch_gradient(loss_case, reduction):
    loss = loss_case.make(reduction=reduction)
    pred, target = loss_case.data(seed=3)
    loss.forward(pred, target)
    whole = loss.backward()
    shards = []
    for p, t in zip(torch.tensor_split(pred, 3), torch.tensor_split(target, 3), strict=True):  # 2 + 1 + 1 rows
        loss.forward(p, t)
        shards.append(loss.backward(shard_weight(len(p), len(pred), reduction)))
    torch.testing.assert_close(torch.cat(shards), whole, rtol=1e-12, atol=1e-15)


def test_each_rank_resumes_its_own_random_stream_and_a_new_rank_gets_a_new_one():
    saved = torch.get_rng_state()
    try:
        states = [{"torch": torch.manual_seed(seed).get_state()} for seed in (1, 2)]
        expected = [_first_draws(seed) for seed in (1, 2)]
        draws = []
        for rank in range(3):
            restore_rng({"rng": states[0], "rng_ranks": states[1:], "step": 7}, rank, seed=0)
            draws.append(torch.rand(4))
        assert torch.equal(draws[0], expected[0]) and torch.equal(draws[1], expected[1])
        assert not torch.equal(draws[2], draws[0]) and not torch.equal(draws[2], draws[1])
        restore_rng({"rng": states[0], "step": 7}, 2, seed=0)  # a run saved by one process: the same new stream
        assert torch.equal(torch.rand(4), draws[2])
    finally:
        torch.set_rng_state(saved)


def _first_draws(seed):
    torch.manual_seed(seed)
    return torch.rand(4)


def test_a_collective_error_becomes_one_line_naming_the_rank():
    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                        "[127.0.0.1]:39079. This is typically caused by a remote worker crashing.\nmore")
    error = rank_failed(1, "the all_reduce of the gradients", gloo, "another rank died")
    assert str(error) == ("rank 1: the all_reduce of the gradients failed: Connection closed by peer "
                          "[127.0.0.1]:39079; another rank died")
