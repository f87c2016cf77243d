"""The conv rows of the benchmark: both backward formulations compute the same gradients, the two nets start
from the same weights as their torch twins, and the rows come out (speed is never asserted)."""

import json
import runpy

import torch

from tests.helpers import ROOT
from tests.twins import rel_err, run_twins, seeded

CONV = runpy.run_path(str(ROOT / "scripts" / "bench_conv.py"), run_name="bench_conv_under_test")


def test_unfold_backward_matches_the_convolution_backward():
    for args in [(4, 6, (3, 2), (2, 1), (1, 2), (1, 2), 2), (1, 6, 5, 1, 2)]:
        torch.manual_seed(0)
        unfold = CONV["UnfoldConv2d"](*args).to(dtype=torch.float64)
        theirs = torch.nn.Conv2d(*args).double()
        got, want = run_twins(unfold, theirs, seeded((3, args[0], 9, 8), 0))
        assert max(rel_err(got[k], want[k]) for k in want) <= 1e-10


def test_each_net_and_its_torch_twin_give_the_same_loss():
    for name, (shape, _) in CONV["NETS"].items():
        ours, theirs = CONV["build_pair"](name)
        x = seeded((2, *shape), 1, torch.float32)
        torch.testing.assert_close(ours(x), theirs(x).detach())


def test_conv_bench_writes_a_row_per_net(tmp_path):
    out = tmp_path / "conv.json"
    assert CONV["main"](["--nets", "cnn_digits", "--rounds", "1", "--threads", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    for key in ("manualnet_steps_per_s", "unfold_steps_per_s", "autograd_steps_per_s", "ratio_vs_autograd",
                "manualnet_peak_bytes", "autograd_peak_bytes_low", "autograd_peak_bytes"):
        assert row[key] > 0, key
    assert row["autograd_peak_bytes_low"] <= row["autograd_peak_bytes"]
