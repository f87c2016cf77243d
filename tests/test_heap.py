"""The C heap kept warm on a CPU (manualnet/training/heap.py): what it sets, where it is not glibc, that the
memory a step frees is not page-faulted in again, that ``manualnet train`` sets it, and its benchmark."""

import json
import os
import platform
import runpy
import subprocess
import sys
import textwrap

import pytest

import manualnet as mn
from manualnet.training import heap
from tests.helpers import ROOT, config_path

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


class FakeLibc:
    def __init__(self, glibc=True, accepts=True):
        self.calls, self.accepts = [], accepts
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.36"

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return int(self.accepts)


@pytest.fixture
def fresh():
    heap.keep_freed_memory.cache_clear()
    yield
    heap.keep_freed_memory.cache_clear()


def test_it_raises_glibcs_trim_and_mmap_thresholds_once_per_process(monkeypatch, fresh):
    libc = FakeLibc()
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: libc)
    assert heap.keep_freed_memory() and heap.keep_freed_memory()
    assert libc.calls == [(heap.M_MMAP_THRESHOLD, 32 * 2**20), (heap.M_TRIM_THRESHOLD, 2**30)]  # once
    assert (heap.M_TRIM_THRESHOLD, heap.M_MMAP_THRESHOLD) == (-1, -3)  # glibc's <malloc.h>


@pytest.mark.parametrize("libc", [FakeLibc(glibc=False), OSError("no C library"), FakeLibc(accepts=False)],
                         ids=["another libc", "no libc", "glibc refuses"])
def test_another_c_library_is_left_as_it_is(monkeypatch, fresh, libc):
    def cdll(name):
        if isinstance(libc, Exception):
            raise libc
        return libc

    monkeypatch.setattr(heap.ctypes, "CDLL", cdll)
    assert heap.keep_freed_memory() is False
    if isinstance(libc, FakeLibc) and not hasattr(libc, "gnu_get_libc_version"):
        assert libc.calls == []  # another libc's mallopt numbers may mean something else
    elif isinstance(libc, FakeLibc):  # a refused mmap threshold: the trim threshold is left as it was too
        assert libc.calls == [(heap.M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD)]


FAULTS = textwrap.dedent("""
    import ctypes, resource, statistics, sys
    from manualnet.training.heap import keep_freed_memory
    if sys.argv[1] == "kept":
        assert keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    def step():  # a step's activations: ten 4 MB blocks, written, then all freed (torch's CPU tensors are malloc's)
        blocks = [libc.malloc(2**22) for _ in range(10)]
        for block in blocks:
            libc.memset(block, 1, 2**22)
        for block in reversed(blocks):
            libc.free(block)
    step(), step()  # the heap grown to a step's size
    faults = []
    for _ in range(10):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(statistics.median(faults))
""")



@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_a_steps_freed_memory_serves_the_next_step_without_page_faults():
    env = {k: v for k, v in os.environ.items()  # glibc's own heap, not one that settings or a preload changed
           if not k.startswith(("MALLOC_", "GLIBC_TUNABLES")) and k != "LD_PRELOAD"}

    def faults(heap_setting):
        out = subprocess.run([sys.executable, "-c", FAULTS, heap_setting], capture_output=True, text=True,
                             check=True, cwd=ROOT, env=env)
        return float(out.stdout)

    kept, default = faults("kept"), faults("default")
    assert kept < 1000 < default  # a step's 40 MB is 10,240 pages: glibc's default gives most back each step


def test_manualnet_train_keeps_its_heap_warm_and_the_python_api_leaves_the_callers_alone(tmp_path, monkeypatch):
    from manualnet.cli import commands
    from manualnet.cli.main import main

    calls = []
    monkeypatch.setattr(commands, "keep_freed_memory", lambda: calls.append(True))
    quick = ["--set", "train.epochs=1", "--set", "log.tensorboard=false"]
    assert main(["train", "--config", str(config_path("regression")), "--run-dir", str(tmp_path / "cli"), "--quiet",
                 *quick]) == 0
    assert calls == [True]
    libc = FakeLibc()  # whatever path the library took to the allocator, it would reach this
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: libc)
    heap.keep_freed_memory.cache_clear()
    try:
        mn.train(config_path("regression"), run_dir=tmp_path / "api", quiet=True, train__epochs=1,
                 log__tensorboard=False)
    finally:
        heap.keep_freed_memory.cache_clear()
    assert libc.calls == []  # the API's caller owns the process: its allocator is theirs


def test_the_heap_benchmark_compares_both_settings_in_their_own_processes(capsys):
    bench_heap = runpy.run_path(str(ROOT / "scripts" / "bench_heap.py"), run_name="bench_heap")
    mlp = bench_heap["run"](["--sizes", "tiny", "--rounds", "1", "--threads", "1"], "default")  # a real child
    assert set(mlp) == {"manualnet", "autograd"} and min(mlp.values()) > 0
    gpt_row = {"ms_per_step": {"manualnet": 10.0, "eager": 12.0}}
    assert bench_heap["ms_per_step"](gpt_row) == gpt_row["ms_per_step"]
    seen = []
    fake = {"kept": {"manualnet": 10.0, "eager": 11.0}, "default": {"manualnet": 12.0, "eager": 11.0}}
    bench_heap["main"].__globals__["run"] = lambda args, setting: seen.append(setting) or fake[setting]
    assert bench_heap["main"](["--pairs", "2"]) == 0
    assert seen == ["kept", "default", "default", "kept"]  # alternate order, pair by pair
    out = capsys.readouterr().out
    assert "manualnet: 10.0 ms with the heap kept warm, 12.0 ms with glibc's default (1.20x)" in out
    assert "eager: 11.0 ms with the heap kept warm, 11.0 ms with glibc's default (1.00x)" in out


def test_a_failed_heap_benchmark_child_is_one_line(capsys):
    bench_heap = runpy.run_path(str(ROOT / "scripts" / "bench_heap.py"), run_name="bench_heap")
    with pytest.raises(bench_heap["ChildFailed"], match=r"bench.py --sizes huge --heap kept exited 2: bench: error: "
                                                        r"unknown size 'huge'"):
        bench_heap["run"](["--sizes", "huge"], "kept")
    bench_heap["main"].__globals__["run"] = lambda args, heap: (_ for _ in ()).throw(bench_heap["ChildFailed"]("x"))
    assert bench_heap["main"](["--pairs", "1"]) == 1
    assert capsys.readouterr().err == "bench_heap: error: x\n"
    with pytest.raises(SystemExit) as stop:
        bench_heap["main"](["--threads", "0"])
    assert stop.value.code == 2


def test_bench_takes_heap_before_its_modes_and_refuses_a_bad_value(tmp_path, capsys):
    bench = runpy.run_path(str(ROOT / "scripts" / "bench.py"), run_name="bench_under_test")
    taken = bench["_take_heap"](["--gpt", "--heap", "default", "--rounds", "1"])
    assert taken == ("default", ["--gpt", "--rounds", "1"])
    assert bench["_take_heap"](["--heap=kept"]) == ("kept", [])
    assert bench["_take_heap"](["--sizes", "tiny"]) == ("kept", ["--sizes", "tiny"])
    assert bench["_take_heap"](["--heap", "kept", "--gpt", "--heap=default"]) == ("default", ["--gpt"])  # the last
    out = tmp_path / "row.json"
    assert bench["main"](["--sizes", "tiny", "--rounds", "1", "--heap", "default", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["size"] == "tiny"
    for argv, line in ((["--heap", "warm"], "--heap takes one of kept, default, got 'warm'"),
                       (["--heap"], "--heap takes one of kept, default, got nothing"),
                       (["--distributed", "--heap", "default"], "--heap default cannot reach --distributed's ranks")):
        assert bench["main"](["--sizes", "tiny", *argv]) == 2
        assert capsys.readouterr().err.startswith(f"bench: error: {line}")


def test_the_fetch_benchmark_times_each_way_of_training_an_epoch(capsys):
    bench_fetch = runpy.run_path(str(ROOT / "scripts" / "bench_fetch.py"), run_name="bench_fetch")
    assert bench_fetch["main"](["--config", str(ROOT / "configs" / "spirals.yaml"), "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("33 steps an epoch on 1 thread(s), medians of 1 rounds, us a step")
    assert [line.split()[0] for line in out[1:5]] == ["pre-gathered", "gathered", "epoch", "loop"]
    assert all(float(line.split()[-1]) > 0 for line in out[1:5])
    assert [line.split(":")[0].strip() for line in out[5:]] == ["gathered - pre-gathered", "epoch copy - gathered",
                                                                "loop - gathered"]
