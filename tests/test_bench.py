"""The benchmark runs and reports sane numbers (correctness, not speed: speed is never asserted)."""

import json
import runpy

import torch

import manualnet as mn
from tests.helpers import ROOT, config_path

BENCH = runpy.run_path(str(ROOT / "scripts" / "bench.py"), run_name="bench_under_test")


def test_both_steps_start_from_the_same_weights_and_give_the_same_update():
    functions, _ = BENCH["step_functions"]([3, 5, 4], 6, torch.device("cpu"), torch.float64)
    ours = functions["manualnet"].__closure__
    assert ours  # the closures hold the two models; compare them through one step each
    manualnet_model = next(c.cell_contents for c in ours if isinstance(c.cell_contents, mn.Sequential))
    torch_model = next(c.cell_contents for c in functions["autograd"].__closure__
                       if isinstance(c.cell_contents, torch.nn.Module))
    for name, p in torch_model.state_dict().items():
        assert torch.equal(p, manualnet_model.state_dict()[name])
    functions["manualnet"]()
    functions["autograd"]()
    for name, p in torch_model.state_dict().items():
        torch.testing.assert_close(p, manualnet_model.state_dict()[name], rtol=1e-12, atol=1e-12)


def test_bench_writes_rows_for_each_size_and_the_trainer_overhead(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert BENCH["main"](["--sizes", "tiny", "--rounds", "1", "--threads", "1", "--json", str(out),
                          "--trainer", str(config_path("regression")), "--trainer-rounds", "1"]) == 0
    result = json.loads(out.read_text())
    row = result["rows"][0]
    assert row["size"] == "tiny" and row["batch"] == 6 and result["machine"]["threads"] == 1
    for key in ("manualnet_steps_per_s", "autograd_steps_per_s", "floor_steps_per_s", "ratio_vs_autograd",
                "fraction_of_floor", "manualnet_peak_bytes", "autograd_peak_bytes_low", "autograd_peak_bytes"):
        assert row[key] > 0, key
    loop = result["trainer"]
    assert loop["steps"] == 220 and loop["pure_steps_s"] > 0 and 0 < loop["validation_s"] < loop["loop_s"]
    assert loop["bare_loop_s"] > 0 and loop["overhead_pregathered"] > -1
    assert loop["overhead_per_round"] < loop["overhead_with_validation"]  # the same rounds, less validation
    costs = loop["costs"]
    assert set(costs) == {"epoch end", "logging", "other", "end", "start"}  # regression.yaml: no histograms
    assert sum(c["steps"] for c in costs.values()) == 220  # every step counted once, by its kind
    assert costs["epoch end"]["steps"] == 19 and costs["end"]["steps"] == 1  # 20 epochs of 11 steps
    by_kind = sum(c["total_s"] for c in costs.values())
    assert abs(by_kind - loop["overhead"] * loop["bare_loop_median_s"]) < 1e-9  # the headline, taken apart
    assert 0 < loop["batch_fetch_s"] < loop["loop_s"]  # 200 fetches within the epochs (each epoch's first: at its end)
    out = capsys.readouterr().out
    assert "ratio" in out and "where it goes, beyond the bare loop: epoch end" in out
    assert "against the bare steps on batches gathered beforehand" in out


def test_the_trainer_config_takes_overrides(capsys):
    assert BENCH["main"](["--sizes", "tiny", "--rounds", "1", "--trainer", str(config_path("regression")),
                          "--trainer-rounds", "1", "--trainer-set", "train.epochs=1"]) == 0
    assert "regression.yaml --set train.epochs=1: 11 steps" in capsys.readouterr().out
    assert BENCH["main"](["--sizes", "tiny", "--rounds", "1", "--trainer", str(config_path("regression")),
                          "--trainer-set", "train.epoch=1"]) == 2
    captured = capsys.readouterr()
    assert "train.epoch" in captured.err and "ratio" not in captured.out  # said before any benchmark ran
    assert BENCH["main"](["--sizes", "tiny", "--trainer-set", "train.epochs=1"]) == 2
    assert "give --trainer CONFIG too" in capsys.readouterr().err


def test_unknown_size_is_exit_2(capsys):
    assert BENCH["main"](["--sizes", "huge"]) == 2
    assert "unknown size 'huge'" in capsys.readouterr().err


def test_the_scaling_benchmark_runs_each_setting_on_its_own_thread_count(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    assert BENCH["main"](["--distributed", "--config", str(config_path("spirals")), "--epochs", "1",
                          "--settings", "1x2", "--rounds", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["setting"], row["threads_used"]) == ("1x2", 2)  # not the one thread train.threads=auto picks
    assert row["steps"] > 0 and row["steps_per_s"] > 0


def test_bad_options_are_one_line_before_any_benchmark_runs(tmp_path, capsys):
    for argv, line in ((["--rounds", "0"], "--rounds must be at least 1, got 0"),
                       (["--trainer-rounds", "-1"], "--trainer-rounds must be at least 1, got -1"),
                       (["--threads", "0"], "--threads must be at least 1, got 0"),
                       (["--json", str(tmp_path / "no" / "x.json")], f"--json {tmp_path / 'no' / 'x.json'}: its "
                                                                      "folder does not exist"),
                       (["--device", "cuda:7" if torch.cuda.is_available() else "cuda"], "device: 'cuda")):
        assert BENCH["main"](["--sizes", "tiny", *argv]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"bench: error: {line}") and captured.err.count("\n") == 1
        assert "ratio" not in captured.out


def test_the_loop_extra_time_is_read_at_each_rounds_own_speed():
    bare_steps, loop_steps = [1.0, 2.0, 2.0, 2.0], [1.0, 3.0, 2.0, 2.0]  # one interval 1 s dearer in the loop
    speeds = [1.0, 2.0, 3.0]  # the host's speed moves from round to round, for both loops alike
    looped = [[s * t for t in loop_steps] for s in speeds]
    looped[0][1] += 5.0  # and a neighbour's burst lands on one step of the fastest round
    bare = [[s * t for t in bare_steps] for s in speeds]
    extra, total = BENCH["_extra_times"](looped, bare)
    assert extra == [0.0, 2.0, 0.0, 0.0] and total == 14.0  # in seconds at the rounds' median speed: 1/7
    unscaled, _ = BENCH["_extra_times"](looped, bare, scaled=False)
    assert unscaled[1] == 8.0 - 4.0  # the seconds' medians: the burst's round is the loop's median, 1/3.5


def test_the_extra_time_over_steps_alone_counts_the_time_before_the_first_step():
    extra, total = BENCH["_extra_times"]([[1.0, 2.0]], [[0.0, 1.5]], scaled=False)  # one round, one step
    assert extra == [1.0, 0.5] and total == 1.5


def test_the_bare_loop_trains_on_the_trainers_batches_as_the_trainer_does(tmp_path):
    from manualnet.config.load import load_config
    from manualnet.config.setup import build
    from manualnet.training.trainer import Trainer

    config = load_config(config_path("spirals"), ["train.epochs=2", "train.grad_clip=0.05", "log.tensorboard=false"])
    bare_globals, built = BENCH["_bare_loop"].__globals__, []
    made = bare_globals["_built"]
    bare_globals["_built"] = lambda *args: built.append(made(*args)) or built[-1]
    try:
        intervals = BENCH["_bare_loop"](config, config_path("spirals").parent)
    finally:
        bare_globals["_built"] = made
    trainer = Trainer(build(config, base_dir=config_path("spirals").parent), tmp_path, quiet=True)
    with torch.no_grad():
        for epoch in range(2):
            trainer.at.epoch, trainer.at.batch = epoch, 0
            trainer.train_epoch()
    assert len(intervals) == trainer.at.step + 1  # as LoopClock.intervals: before the first step, then each step
    ours = built[0][0].model.state_dict()
    for name, p in trainer.model.state_dict().items():
        assert torch.equal(p, ours[name]), name  # the same batches, the same clipped steps
