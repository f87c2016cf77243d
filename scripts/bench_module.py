#!/usr/bin/env python3
"""What the Module API itself costs, and what ``needs_input_grad = False`` saves, on one thread.

- a trusted child's forward and backward: a Sequential of 20 Identity layers against one of 1, per extra layer;
- an MNIST-size step (784-512-256-10, batch 128, SGD) with the first Linear's dx computed and skipped.
Medians of interleaved rounds in one process. Run ``python scripts/bench_module.py``.
"""

import statistics
import sys
import time

import torch

import manualnet as mn


def per_call_us(fn, calls, rounds):
    for _ in range(calls // 10):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def child_overhead_us(rounds):
    x = torch.randn(4, 4)
    long, short = mn.Sequential(*[mn.Identity() for _ in range(20)]), mn.Sequential(mn.Identity())
    times = {}
    for _ in range(rounds):  # interleaved
        for name, model in (("long", long), ("short", short)):
            times.setdefault(name, []).append(per_call_us(lambda m=model: m.backward(m(x)), 2000, 1))
    return (statistics.median(times["long"]) - statistics.median(times["short"])) / 19


def input_grad_ms(rounds):
    torch.manual_seed(0)
    model = mn.Sequential(mn.Linear(784, 512), mn.ReLU(), mn.Linear(512, 256), mn.ReLU(), mn.Linear(256, 10))
    x, t, loss = torch.randn(128, 784), torch.randint(0, 10, (128,)), mn.CrossEntropyLoss()
    optimizer = mn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad()
        loss(model(x), t)
        model.backward(loss.backward())
        optimizer.step()

    times = {True: [], False: []}
    for _ in range(rounds):
        for flag in times:
            model[0].needs_input_grad = flag
            times[flag].append(per_call_us(step, 20, 1) / 1e3)
    return {flag: statistics.median(v) for flag, v in times.items()}


def main():
    torch.set_num_threads(1)
    print(f"a trusted child's forward + backward: {child_overhead_us(9):.2f} us (one thread)")
    ms = input_grad_ms(9)
    print(f"MNIST-size step: {ms[True]:.2f} ms computing the first layer's dx, {ms[False]:.2f} ms skipping it "
          "(needs_input_grad = False)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
