#!/usr/bin/env python3
"""Data-parallel scaling: ``manualnet train`` throughput on 1 process against N processes, on one machine.

Each setting ``PxT`` is P processes of T torch threads each (P > 1: ranks of one gloo job on localhost,
started with the variables torchrun sets). Every round runs each setting once, in interleaved order, and
reads the training loop's own time from the run's summary.json (``wall_time_s``: the epochs, without the
start-up, the process-group rendezvous and the final test evaluation). The table shows the median over
rounds of steps/s and samples/s, and the speed-up over the first setting.

Presets: ``digits`` (configs/mlp.yaml, a 64-256-10 MLP: communication-bound) and ``mnist`` (the
784-512-256-10 MLP of configs/mnist_mlp.yaml on 12,000 synthetic MNIST-sized samples, written to a
temporary .npz, so no download is needed). Run ``python scripts/bench.py --distributed [options]`` or this
file directly; ``--json FILE`` writes the rows.
"""

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {"digits": ("mlp.yaml", 30), "mnist": ("mnist_mlp.yaml", 2)}  # config, epochs by default
QUIET = ["--quiet", "--set", "log.tensorboard=false", "--set", "log.histograms_every=0", "--set", "log.every=1000"]


def synthetic_mnist(folder, n=12000, seed=0):
    """An .npz of ``n`` MNIST-sized samples (784 features, 10 classes from a random linear teacher)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 784), dtype=np.float32)
    y = (x @ rng.standard_normal((784, 10), dtype=np.float32)).argmax(1)
    path = Path(folder) / "mnist-synthetic.npz"
    np.savez(path, x=x, y=y)
    data = {"dataset": "npz", "path": str(path), "val_fraction": 0.05, "test_fraction": 0.05}
    return ["--set", f"data={json.dumps(data)}"]


def train_arguments(args, folder):
    """``manualnet train`` arguments: the config, its epochs, validation only after the last one."""
    config, default_epochs = PRESETS[args.preset]
    epochs = args.epochs or default_epochs
    train = ["--config", args.config or str(ROOT / "configs" / config), "--set", f"train.epochs={epochs}",
             "--set", f"train.eval_every={epochs}", "--set", f"train.checkpoint_every={epochs}"]
    if args.preset == "mnist" and not args.config:
        train += synthetic_mnist(folder)
    return train + [x for override in args.set for x in ("--set", override)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_setting(processes, threads, args, run_dir):
    """Train once as ``processes`` ranks of ``threads`` threads; the run's summary.json."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(threads)}
    if processes > 1:
        env.update({"WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())})
    command = [sys.executable, "-m", "manualnet", "train", *args, "--set", f"train.threads={threads}",
               "--run-dir", str(run_dir), *QUIET]  # the setting's threads, not what train.threads=auto picks
    procs = [subprocess.Popen(command, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)} if processes > 1 else env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in range(processes)]
    errors = [p.communicate()[1] for p in procs]
    for rank, (p, err) in enumerate(zip(procs, errors, strict=True)):
        if p.returncode != 0:
            raise RuntimeError(f"{processes}x{threads}, process {rank} exited {p.returncode}: {err.strip()}")
    return json.loads((run_dir / "summary.json").read_text())


def measure(settings, args, rounds, folder):
    """{setting: [summary per round]}, the settings interleaved round by round."""
    results = {s: [] for s in settings}
    for r in range(rounds):
        for s in settings:
            processes, threads = s
            results[s].append(run_setting(processes, threads, args, Path(folder) / f"{processes}x{threads}-{r}"))
    return results


def rows(results):
    first = None
    out = []
    for (processes, threads), summaries in results.items():
        steps_s = statistics.median(s["steps"] / s["wall_time_s"] for s in summaries)
        samples_s = statistics.median(s["samples_per_sec"] for s in summaries)
        first = first or steps_s
        out.append({"setting": f"{processes}x{threads}", "processes": processes, "threads": threads,
                    "threads_used": summaries[0].get("threads"),
                    "steps": summaries[0]["steps"], "steps_per_s": steps_s, "samples_per_s": samples_s,
                    "speedup": steps_s / first, "test_accuracy": summaries[0].get("test/accuracy")})
    return out


def format_rows(table):
    lines = [f"{'setting':<9}{'processes':>10}{'threads':>8}{'steps':>7}{'steps/s':>10}{'samples/s':>11}"
             f"{'speed-up':>10}{'test acc':>10}"]
    for r in table:
        accuracy = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        lines.append(f"{r['setting']:<9}{r['processes']:>10}{r['threads']:>8}{r['steps']:>7}{r['steps_per_s']:>10.1f}"
                     f"{r['samples_per_s']:>11.0f}{r['speedup']:>10.2f}{accuracy:>10}")
    return "\n".join(lines)


def parse_settings(text):
    """"1x1,2x1" -> [(1, 1), (2, 1)]; None if malformed."""
    try:
        settings = [tuple(int(n) for n in item.strip().split("x")) for item in text.split(",")]
    except ValueError:
        return None
    return settings if all(len(s) == 2 and min(s) >= 1 for s in settings) else None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.py --distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="digits")
    parser.add_argument("--config", help="train this config instead of the preset's")
    parser.add_argument("--epochs", type=int, help="train.epochs (default: 30 for digits, 2 for mnist)")
    parser.add_argument("--settings", default="1x1,1x2,2x1", help="PxT,...: P processes of T threads each")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    parser.add_argument("--json", metavar="FILE", help="write the rows and the machine description here")
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    if not settings:
        print(f"bench: error: --settings {args.settings!r}: expected PxT,... such as 1x1,2x1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        train = train_arguments(args, folder)
        print(f"manualnet distributed bench: {args.config or args.preset}, torch {torch.__version__}, "
              f"{os.cpu_count()} cores, median of {args.rounds} interleaved rounds")
        table = rows(measure(settings, train, args.rounds, folder))
    print(format_rows(table))
    if args.json:
        machine = {"torch": torch.__version__, "cores": os.cpu_count(), "python": platform.python_version(),
                   "cpu": platform.processor() or platform.machine(), "rounds": args.rounds}
        Path(args.json).write_text(json.dumps({"machine": machine, "preset": args.preset, "config": args.config,
                                               "rows": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
