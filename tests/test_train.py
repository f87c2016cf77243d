"""End-to-end training through the CLI: run directories, metrics, TensorBoard, resume, determinism."""

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
import torch
import yaml

from manualnet.cli.main import main
from tests.helpers import ROOT, config_path, metrics, run_cli, summary

FAST = ["--set", "train.epochs=2", "--set", "log.every=5", "--set", "log.histograms_every=7", "--quiet"]


def train(tmp_path, config="mlp", *extra, name="run"):
    run_dir = tmp_path / name
    code = main(["train", "--config", str(config_path(config)), "--run-dir", str(run_dir), *FAST, *extra])
    return code, run_dir


def test_run_directory_holds_config_metrics_summary_checkpoints_and_events(tmp_path):
    code, run_dir = train(tmp_path)
    assert code == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["model"][0]["out_features"] == 256
    result = summary(run_dir)
    for key in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "test/loss", "test/accuracy",
                "wall_time_s", "samples_per_sec"):
        assert key in result, key
    assert 0.5 < result["test/accuracy"] <= 1
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    epochs = [m for m in metrics(run_dir) if "val/loss" in m]
    assert [m["epoch"] for m in epochs] == [1, 2]  # as the progress lines, summary.json and best.pt count


def test_tensorboard_events_hold_scalars_histograms_and_config(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = train(tmp_path)
    events = EventAccumulator(str(run_dir), size_guidance={"histograms": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss_step", "train/accuracy_step", "train/loss", "train/accuracy", "val/loss",
                "val/accuracy", "lr", "grad_norm", "samples_per_sec", "epoch", "test/loss", "test/accuracy"):
        assert tag in scalars, tag
    assert not any(t.startswith("hparams/") for t in scalars)  # the HPARAMS tab reads the run's own scalars
    histograms = set(events.Tags()["histograms"])
    assert {"weights/0.weight", "grads/0.weight", "activations/1.ReLU"} <= histograms
    assert any("config" in t for t in events.Tags()["tensors"])
    steps = lambda tag: [e.step for e in events.Scalars(tag)]  # noqa: E731
    # 2 epochs of 20 steps, logging every 5: one curve per logging interval, one per epoch, never mixed.
    assert steps("train/loss_step") == steps("update_ratio/0.weight") == steps("lr") == list(range(5, 41, 5))
    assert steps("train/loss") == steps("val/loss") == steps("epoch") == [20, 40]
    assert [e.value for e in events.Scalars("epoch")] == [1, 2]
    assert steps("test/loss") == [40]
    assert all(v == v and v > 0 for v in (e.value for e in events.Scalars("train/loss_step")))


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    pinned = ("mlp", "--set", "train.threads=1")  # auto could see a busy core for one run and not the other
    _, a = train(tmp_path, *pinned, name="a")
    _, b = train(tmp_path, *pinned, name="b")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "samples_per_sec"} for r in rows]  # noqa: E731
    assert strip(metrics(a)) == strip(metrics(b))


def test_resume_extends_a_finished_run_bit_identically(tmp_path):
    # A constant schedule: a cosine one depends on the total epochs, which extending a run changes.
    _, straight = train(tmp_path, "sigmoid_net", "--set", "train.epochs=3", name="straight")
    _, split = train(tmp_path, "sigmoid_net", name="split")
    assert main(["train", "--resume", str(split), "--set", "train.epochs=3", "--quiet"]) == 0
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key in ("val/loss", "test/loss", "train/loss"):
        assert summary(straight)[key] == summary(split)[key]


def test_eval_reports_val_and_test_metrics_of_a_checkpoint(tmp_path, capsys):
    _, run_dir = train(tmp_path)
    capsys.readouterr()
    assert main(["eval", "--run", str(run_dir), "--checkpoint", "last"]) == 0
    out = capsys.readouterr().out
    assert "val/accuracy" in out and "test/accuracy" in out


@pytest.mark.parametrize("config", ["sigmoid_net", "spirals", "regression"])
def test_shipped_config_trains_a_few_steps(tmp_path, config):
    code, run_dir = train(tmp_path, config, "--set", "train.epochs=1")
    assert code == 0
    result = summary(run_dir)
    assert result["test/loss"] == result["test/loss"]  # finite, not nan
    if config != "regression":
        assert "test/accuracy" in result


def test_mnist_config_trains_on_idx_files(tmp_path):
    from tests.test_data import write_idx_set  # builds a tiny MNIST-format set

    root = tmp_path / "mnist"
    write_idx_set(root, n_train=60, n_test=20)
    code, run_dir = train(tmp_path, "mnist_mlp", "--set", f"data.root={root}")
    assert code == 0 and "test/accuracy" in summary(run_dir)


def test_plain_output_prints_one_line_per_epoch(tmp_path):
    result = run_cli("train", "--config", config_path("mlp"), "--run-dir", tmp_path / "r",
                     "--set", "train.epochs=3", "--set", "log.tensorboard=false")
    assert result.returncode == 0, result.stderr
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    rows = [m for m in metrics(tmp_path / "r") if "val/loss" in m]
    assert epoch_lines[-1] == (f"epoch 3/3  loss {rows[-1]['train/loss']:.4g}  acc {rows[-1]['train/accuracy']:.4g}  "
                               f"val_loss {rows[-1]['val/loss']:.4g}  val_acc {rows[-1]['val/accuracy']:.4g}")
    assert "test/accuracy" in result.stdout
    assert result.stdout.splitlines()[-1] == f"run directory: {tmp_path / 'r'}"  # no events: no tensorboard line


def test_quiet_prints_only_the_summary_table_the_run_directory_and_the_tensorboard_command(tmp_path):
    result = run_cli("train", "--config", config_path("mlp"), "--run-dir", tmp_path / "r", "--quiet",
                     "--set", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "test/accuracy" in result.stdout
    run_dir = tmp_path / "r"
    assert result.stdout.splitlines()[-2:] == [f"run directory: {run_dir}", f"tensorboard --logdir {run_dir}"]


def test_default_run_directory_is_new_and_timestamped(tmp_path):
    args = ["train", "--config", str(config_path("regression")), "--quiet", "--set", "train.epochs=1",
            "--set", "log.tensorboard=false"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    runs = sorted((tmp_path / "runs" / "regression").iterdir())
    assert len(runs) == 2 and all((r / "summary.json").is_file() for r in runs)


@pytest.mark.slow
def test_mlp_config_reaches_97_percent_on_digits(tmp_path):
    result = run_cli("train", "--config", config_path("mlp"), "--run-dir", tmp_path / "r", "--quiet")
    assert result.returncode == 0, result.stderr
    assert summary(tmp_path / "r")["test/accuracy"] >= 0.97


def test_summary_names_match_tensorboard_tags(tmp_path):
    _, run_dir = train(tmp_path)
    logged = set().union(*(m.keys() for m in metrics(run_dir)))
    assert {"train/loss", "val/loss", "val/accuracy"} <= logged & set(summary(run_dir))


def test_an_optimizer_without_lr_in_the_config_trains_with_its_default(tmp_path):
    code, run_dir = train(tmp_path, "mlp", "--set", 'optim={"type": "Adam"}')
    assert code == 0
    assert summary(run_dir)["test/accuracy"] > 0.5  # Adam's default lr = 1e-3 learns the digits (chance: 0.1)


def test_the_epochs_train_accuracy_counts_every_batch_as_its_loss_does(tmp_path, monkeypatch):
    from manualnet.config.load import load_config
    from manualnet.config.setup import build
    from manualnet.training import trainer as trainer_module

    setup = build(load_config(config_path("spirals"), ["log.every=10", "log.tensorboard=false"]))
    trainer = trainer_module.Trainer(setup, tmp_path, quiet=True)
    counts, flags = [], trainer_module.right_predictions
    monkeypatch.setattr(trainer_module, "right_predictions",
                        lambda pred, labels, *a: (counts.append((int(flags(pred, labels, *a).sum()), len(labels))),
                                                  flags(pred, labels, *a))[1])
    with torch.no_grad():
        trainer.train_epoch()  # 33 batches, 3 of them logging steps
    metrics = trainer.running.end_epoch()
    trainer.log.close()
    assert len(counts) == 33 and sum(n for _, n in counts) == 2100
    assert metrics["train/accuracy"] == sum(c for c, _ in counts) / 2100


def test_without_tensorboard_no_step_computes_histograms_or_update_ratios(tmp_path, monkeypatch):
    from manualnet.config.load import load_config
    from manualnet.config.setup import build
    from manualnet.training import trainer as trainer_module

    calls = []
    for name in ("parameters_before", "log_update_ratios", "log_histograms", "record_outputs"):
        monkeypatch.setattr(trainer_module, name, lambda *a, name=name, **k: calls.append(name))
    setup = build(load_config(config_path("spirals"), ["log.every=2", "log.histograms_every=3",
                                                       "log.tensorboard=false"]))
    trainer = trainer_module.Trainer(setup, tmp_path, quiet=True)
    with torch.no_grad():
        trainer.train_epoch()
    trainer.log.close()
    assert trainer.at.step > 6 and calls == []


def test_every_epoch_reports_train_accuracy_when_no_step_logs(tmp_path):
    code, run_dir = train(tmp_path, "mlp", "--set", "log.every=100000")
    assert code == 0
    epochs = [m for m in metrics(run_dir) if "val/loss" in m]
    assert len(epochs) == 2 and all(0 < m["train/accuracy"] <= 1 for m in epochs)
    assert "train/accuracy" in summary(run_dir)


def test_resuming_a_finished_run_has_nothing_to_do_and_keeps_its_metrics_and_time(tmp_path, capsys):
    _, run_dir = train(tmp_path, "mlp")
    before, rows = summary(run_dir), metrics(run_dir)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == (f"manualnet: {run_dir} has already trained its 2 epochs: nothing to do (to train "
                                 "more, resume with --set train.epochs=N, N > 2)\n")
    after = summary(run_dir)
    assert metrics(run_dir) == rows
    for key in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "test/loss", "epochs", "steps"):
        assert after[key] == before[key], key
    # The time is the training's, over both processes (not the few ms the second one spent), so the rate holds.
    assert after["wall_time_s"] == pytest.approx(before["wall_time_s"], abs=0.5)
    assert after["samples_per_sec"] == pytest.approx(before["samples_per_sec"], rel=0.5)


def test_a_relative_data_path_is_saved_absolute_so_resume_works_from_anywhere(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    x = torch.randn(120, 4)
    np.savez(data / "blobs.npz", x=x.numpy(), y=(x[:, 0] > 0).long().numpy())
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "npz", "path": "data/blobs.npz"}, "model": [{"type": "Linear", "out_features": 2}],
        "train": {"epochs": 1}, "log": {"tensorboard": False}}))
    first = run_cli("train", "--config", config, "--run-dir", tmp_path / "run", "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["path"] == str(data / "blobs.npz")
    again = run_cli("train", "--resume", tmp_path / "run", "--set", "train.epochs=2", "--quiet")  # cwd: the repo
    assert again.returncode == 0, again.stderr


def test_a_terminal_keeps_a_line_per_epoch_above_the_bars_and_nothing_is_wider_than_80_columns(tmp_path):
    primary, secondary = pty.openpty()  # tqdm draws its bars only on a terminal
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 24 rows, 80 columns
    proc = subprocess.Popen([sys.executable, "-m", "manualnet", "train", "--config", str(config_path("mlp")),
                             "--run-dir", str(tmp_path / "run"), "--set", "train.epochs=3", "--set", "log.every=5",
                             "--set", "log.tensorboard=false"],
                            stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "TQDM_MININTERVAL": "0"})  # draw every step
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    assert proc.wait(timeout=120) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    drawn = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", part) for part in re.split(r"[\r\n]", text)]  # cursor moves out
    drawn = [line for line in drawn if str(tmp_path) not in line]  # a path is as long as it is: not wrapped
    assert max(len(line) for line in drawn) <= 80, max(drawn, key=len)
    step_bar = r"epoch 2/3 \d+/20 \|.*\| ETA [\d:]+, loss [\d.]+ acc [\d.]+ [\d.]+k? samples/s"
    assert re.search(step_bar, text), text[-2000:]
    rows = [m for m in metrics(tmp_path / "run") if "val/loss" in m]
    for epoch, row in enumerate(rows, 1):  # each epoch's line, written once, with the metrics.jsonl values
        line = (f"epoch {epoch}/3  loss {row['train/loss']:.4g}  acc {row['train/accuracy']:.4g}  "
                f"val_loss {row['val/loss']:.4g}  val_acc {row['val/accuracy']:.4g}")
        assert drawn.count(line) == 1, (line, text[-2000:])
    assert re.search(r"epochs: 100%.*3/3", text), text[-2000:]


@pytest.mark.parametrize("interval, saves", [(0, 4), (1e6, 2)])  # 2: the first epoch and the last
def test_epoch_checkpoints_are_at_most_one_per_interval_and_the_last_epoch_always_saves(tmp_path, monkeypatch,
                                                                                        interval, saves):
    from manualnet.training import checkpoint

    written = []
    submit = checkpoint.Writer.submit
    monkeypatch.setattr(checkpoint.Writer, "submit",
                        lambda self, state, paths: (written.append((state["step"], [p.name for p in paths])),
                                                    submit(self, state, paths))[1])
    code, run_dir = train(tmp_path, "mlp", "--set", "train.epochs=4", "--set",
                          f"train.checkpoint_interval_s={interval}")
    assert code == 0
    lasts = [step for step, names in written if "last.pt" in names]
    assert len(lasts) == saves and lasts[-1] == summary(run_dir)["steps"]
    best = checkpoint.load(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == summary(run_dir)["best_epoch"]
    # best.pt holds the best epoch's weights even when no epoch-end checkpoint was written at that epoch.
    final = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    same = all(torch.equal(best["model"][k], final["model"][k]) for k in final["model"])
    assert same == (best["epoch"] == 4)


def test_histograms_are_written_with_their_statistics_and_bins(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from manualnet.log.logger import MetricsLogger

    log = MetricsLogger(tmp_path, tensorboard=True)
    log.histograms({"a": torch.arange(10.0), "b": torch.full((3, 2), 2.0), "nan": torch.tensor([float("nan")])},
                   step=5, bins=4)
    log.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    events.Reload()
    assert sorted(events.Tags()["histograms"]) == ["a", "b"]  # a non-finite tensor has no histogram
    a = events.Histograms("a")[0]
    assert a.step == 5
    assert (a.histogram_value.min, a.histogram_value.max, a.histogram_value.num) == (0, 9, 10)
    assert (a.histogram_value.sum, a.histogram_value.sum_squares) == (45, 285)
    assert a.histogram_value.bucket_limit == [2.25, 4.5, 6.75, 9.0]
    assert a.histogram_value.bucket == [3, 2, 2, 3]  # torch.histc's bins: [0, 2.25), ..., [6.75, 9]
    assert events.Histograms("b")[0].histogram_value.bucket == [6, 0, 0, 0]


def test_metrics_rows_are_written_when_asked_when_due_and_at_close(tmp_path):
    from manualnet.log.logger import MetricsLogger

    def rows():
        return [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]

    log = MetricsLogger(tmp_path, tensorboard=False, handoff_s=3600)
    log.scalars({"train/loss": 1.0}, 1, 0)
    assert rows() == []  # recorded, not yet written
    log.write_rows()  # the trainer's call before each checkpoint and after an epoch of handoff_s or more
    log.scalars({"train/loss": float("nan"), "lr": torch.tensor(0.5)}, 2, 0)
    assert rows() == [1]
    log.close()
    assert rows() == [1, 2]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1]) == \
        {"step": 2, "epoch": 0, "train/loss": None, "lr": 0.5}
    log = MetricsLogger(tmp_path, tensorboard=False, handoff_s=0)  # every hand-off due at once
    log.scalars({"train/loss": 1.0}, 3, 1)
    assert rows() == [1, 2, 3]
    log.close()

    class CtrlCAfterFlush:  # a Ctrl-C arriving as the lines are flushed: close() must not write them again
        def __init__(self, f):
            self.f, self.write, self.close = f, f.write, f.close

        def flush(self):
            self.f.flush()
            raise KeyboardInterrupt

    log = MetricsLogger(tmp_path, tensorboard=False, handoff_s=3600)
    log.jsonl = CtrlCAfterFlush(log.jsonl)
    log.scalars({"train/loss": 1.0}, 4, 1)
    with pytest.raises(KeyboardInterrupt):
        log.write_rows()
    log.close()
    assert rows() == [1, 2, 3, 4]


@pytest.mark.parametrize("long_epoch", [True, False])
def test_an_epoch_of_a_second_or_more_writes_its_rows_at_its_end(tmp_path, long_epoch):
    import time

    from manualnet.config.load import load_config
    from manualnet.config.setup import build
    from manualnet.training.trainer import Trainer

    setup = build(load_config(config_path("mlp"), ["log.tensorboard=false", "log.every=100000",
                                                   "train.checkpoint_interval_s=1e9"]))  # a slow epoch: still none
    trainer = Trainer(setup, tmp_path, quiet=True)
    trainer.log.handoff_s = 0.0 if long_epoch else 3600.0  # every epoch is "long", or none is
    trainer.log._hand_off_when_due = lambda: None  # only the trainer's own calls write
    trainer.checkpoints._saved_at = time.perf_counter()  # and no checkpoint is due after this epoch
    with torch.no_grad():
        trainer.train_epoch()
        trainer.end_epoch()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows if "val/loss" in row] == ([1] if long_epoch else [])
    trainer.log.close()
    assert len(metrics(tmp_path)) == 1  # written at close either way


def test_tensorboard_event_checksums_are_the_ones_tensorboard_computes(tmp_path):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.summary.writer import record_writer

    from manualnet.log.logger import MetricsLogger

    MetricsLogger(tmp_path, tensorboard=True).close()  # installs the C checksum
    assert getattr(record_writer.masked_crc32c, "manualnet", False)
    for size in (0, 1, 12, 120, 5000):
        data = os.urandom(size)
        assert record_writer.masked_crc32c(data) == masked_crc32c(data)


def test_an_evaluation_pass_leaves_no_cache_behind(tmp_path):
    from manualnet.config.load import load_config
    from manualnet.config.setup import build
    from manualnet.training.evaluate import evaluate

    setup = build(load_config(config_path("mlp"), ["log.tensorboard=false"]))
    x, targets, labels = setup.split("val")
    setup.model.eval()
    evaluate(setup.model, setup.loss, x, targets, labels, setup.classification)
    assert all(layer.cache is None for layer in setup.model) and setup.loss.cache is None


def test_without_a_validation_split_the_best_epoch_is_chosen_by_train_loss(tmp_path):
    code, run_dir = train(tmp_path, "spirals", "--set", "data.val_fraction=0", "--set", "train.epochs=3")
    assert code == 0
    result = summary(run_dir)
    assert "val/loss" not in result and 1 <= result["best_epoch"] <= 3
    assert (run_dir / "checkpoints" / "best.pt").is_file()


def test_with_eval_every_only_validated_epochs_can_be_best(tmp_path):
    code, run_dir = train(tmp_path, "mlp", "--set", "train.epochs=5", "--set", "train.eval_every=2")
    assert code == 0
    assert summary(run_dir)["best_epoch"] in (2, 4, 5)  # 5: the last epoch is always validated


def test_the_first_epoch_is_checkpointed_whatever_checkpoint_every_says(tmp_path, monkeypatch):
    from manualnet.training import checkpoint

    steps = []
    submit = checkpoint.Writer.submit
    monkeypatch.setattr(checkpoint.Writer, "submit",
                        lambda self, state, paths: (steps.append(state["epoch"]), submit(self, state, paths))[1])
    code, _ = train(tmp_path, "mlp", "--set", "train.epochs=5", "--set", "train.checkpoint_every=3",
                    "--set", "train.checkpoint_interval_s=0")
    assert code == 0
    assert [e for e in steps if e is not None][:1] == [1] and 3 in steps and steps[-1] == 5


def test_yaml_merge_keys_still_work(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("base: &base {type: Linear, out_features: 16}\n"
                      "model:\n  - <<: *base\n  - {type: ReLU}\n  - {type: Linear, out_features: 10}\n")
    from manualnet.config.load import read_yaml

    assert read_yaml(config)["model"][0] == {"type": "Linear", "out_features": 16}


def test_a_resumed_run_says_where_it_resumed_from(tmp_path, capsys):
    from manualnet.cli.commands import _where

    _, run_dir = train(tmp_path, "sigmoid_net")  # 2 epochs of 126 steps
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "train.epochs=3"]) == 0
    assert "resumed from the end of epoch 2 (step 252)\n" in capsys.readouterr().err
    assert _where({"epoch": 2, "batch": 5, "step": 45}) == "epoch 3, after its batch 5 (step 45)"
    assert [m["epoch"] for m in metrics(run_dir) if "val/loss" in m] == [1, 2, 3]


def test_a_language_models_train_accuracy_keeps_its_fractions_of_positions():
    from manualnet.training.metrics import RunningMetrics

    running = RunningMetrics()
    for correct in (torch.tensor(5.81, dtype=torch.float64), torch.tensor(8.06, dtype=torch.float64)):
        running.add(1.0, correct, 16)  # a window counts the fraction of its positions that are right
    assert running.end_epoch()["train/accuracy"] == pytest.approx((5.81 + 8.06) / 32)
    flags = torch.tensor([[True, False, False, False], [True, True, True, False]])  # as right_predictions gives
    running.add(1.0, flags, 2)
    running.add(1.0, flags[:1], 1)  # an epoch's last, smaller batch
    assert running.end_epoch()["train/accuracy"] == pytest.approx((0.25 + 0.75 + 0.25) / 3)


def test_right_prediction_flags_counted_later_give_the_sums_counts_give_at_once():
    from manualnet.errors import DataError
    from manualnet.training import metrics as metrics_module
    from manualnet.training.evaluate import accuracy_count, right_predictions

    torch.manual_seed(0)
    batches = [(torch.randn(n, 3), torch.randint(0, 3, (n,))) for n in [8] * 150 + [5]]
    at_once, flagged = metrics_module.RunningMetrics(), metrics_module.RunningMetrics()
    for step, (pred, labels) in enumerate(batches, 1):
        at_once.add(0.5, accuracy_count(pred, labels), len(labels))
        flagged.add(0.5, right_predictions(pred, labels), len(labels))
        assert len(flagged._uncounted) < metrics_module.MAX_UNCOUNTED  # the memory they hold stays bounded
        if step % 10 == 0:  # a logging step: the interval's sums are read
            assert flagged.interval_metrics(0.1, None)["train/accuracy_step"] == \
                at_once.interval_metrics(0.1, None)["train/accuracy_step"]
        if step == 77:  # a checkpoint between logging steps holds the flags' count
            assert flagged.state_dict()["interval"] == at_once.state_dict()["interval"]
        if step % 40 == 0:  # an epoch's end, inside an interval
            assert flagged.end_epoch() == at_once.end_epoch()
    assert flagged.end_epoch() == at_once.end_epoch() and flagged.state_dict()["interval"]["correct"] > 0
    binary = right_predictions(torch.tensor([[0.7], [0.2], [0.9]]), torch.tensor([1, 1, 0]))
    assert binary.tolist() == [True, False, False]  # a single output: pred > threshold names class 1
    with pytest.raises(DataError, match=r"labels of shape \(3, 1\) for predictions of shape \(3, 1\); "
                                        r"expected labels of shape \(3,\)"):
        right_predictions(torch.tensor([[0.7], [0.2], [0.9]]), torch.tensor([[1], [1], [0]]))  # not broadcast


def test_a_sequences_fractions_are_summed_batch_by_batch_as_a_resumed_run_sums_them():
    from manualnet.training.evaluate import accuracy_count, right_predictions
    from manualnet.training.metrics import RunningMetrics

    torch.manual_seed(0)  # 20 positions: fractions of 20ths, inexact in binary, so the order of sums shows
    at_once, flagged = RunningMetrics(), RunningMetrics()
    for step in range(1, 31):
        pred, labels = torch.randn(8, 20, 5), torch.randint(0, 5, (8, 20))
        at_once.add(0.5, accuracy_count(pred, labels), 8)
        flagged.add(0.5, right_predictions(pred, labels), 8)
        if step % 7 == 0:  # a checkpoint between logging steps
            assert flagged.state_dict()["interval"] == at_once.state_dict()["interval"]
        if step % 10 == 0:
            assert flagged.interval_metrics(0.1, None)["train/accuracy_step"] == \
                at_once.interval_metrics(0.1, None)["train/accuracy_step"]
    assert flagged.end_epoch() == at_once.end_epoch()
