#!/usr/bin/env python3
"""Benchmark: what keeping the C heap warm (manualnet/training/heap.py, set by ``manualnet train``) saves.

The setting is process-wide and cannot be taken back, so each of ``--pairs`` pairs runs two child processes
of ``scripts/bench.py`` with the same arguments, one ``--heap kept`` and one ``--heap default``, in alternate
order; it reports the median step time of each contestant in each setting and the ratio default / kept
(above 1: the warm heap is faster). The default benchmark is the GPT's step against torch.nn eager
(``--gpt --no-compile``); ``--mlp`` times the MNIST-size MLP's step against autograd instead. Run
``python scripts/bench_heap.py [--pairs 3] [--rounds 5] [--mlp]``.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().with_name("bench.py")


def ms_per_step(result):
    """{contestant: ms per step} from a bench.py --json file: the GPT's row, or the first MLP size's."""
    if "ms_per_step" in result:
        return result["ms_per_step"]
    row = result["rows"][0]
    return {"manualnet": 1e3 / row["manualnet_steps_per_s"], "autograd": 1e3 / row["autograd_steps_per_s"]}


class ChildFailed(Exception):
    pass


def run(bench_args, heap):
    """{contestant: ms per step} from one child process of bench.py with ``--heap heap``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        command = [sys.executable, str(BENCH), *bench_args, "--heap", heap, "--json", str(out)]
        child = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if child.returncode != 0:
            said = (child.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
            raise ChildFailed(f"bench.py {' '.join(command[2:-2])} exited {child.returncode}: {said}")
        return ms_per_step(json.loads(out.read_text()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="bench.py's interleaved rounds in each process")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads in each process (default: torch's)")
    parser.add_argument("--mlp", action="store_true", help="the MNIST-size MLP's step instead of the GPT's")
    args = parser.parse_args(argv)
    if min(args.pairs, args.rounds, 1 if args.threads is None else args.threads) < 1:
        parser.error("--pairs, --rounds and --threads must be at least 1")
    bench_args = ["--sizes", "mnist"] if args.mlp else ["--gpt", "--no-compile"]
    bench_args += ["--rounds", str(args.rounds)] + (["--threads", str(args.threads)] if args.threads else [])
    times = {"kept": [], "default": []}
    try:
        for pair in range(args.pairs):
            for heap in ("kept", "default") if pair % 2 == 0 else ("default", "kept"):
                times[heap].append(run(bench_args, heap))
    except ChildFailed as e:
        print(f"bench_heap: error: {e}", file=sys.stderr)
        return 1
    what = "MNIST-size MLP" if args.mlp else "GPT 4x128"
    print(f"{what} step, bench.py {' '.join(bench_args)}, medians over {args.pairs} pairs of processes")
    for name in times["kept"][0]:
        kept, default = (statistics.median(t[name] for t in times[heap]) for heap in ("kept", "default"))
        print(f"{name}: {kept:.1f} ms with the heap kept warm, {default:.1f} ms with glibc's default "
              f"({default / kept:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
