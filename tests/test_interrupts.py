"""Interrupts, kills, damaged checkpoints and divergence lose no work."""

import signal
import time

import pytest
import torch
import yaml

from manualnet.cli.main import main
from manualnet.errors import CheckpointError
from manualnet.training import checkpoint
from tests.helpers import config_path, metrics, run_cli, start_cli, summary, wait_for

# log.every=7 does not divide an epoch's 20 steps: a stop can fall inside a logging interval. A checkpoint
# every epoch: metrics.jsonl then gets each epoch's rows as it ends (else at least once a second). One thread:
# the straight run and the interrupted one are separate processes, and "auto" may pick each its own count.
EPOCHS = 30  # about 0.4 s of training: the signal tests pause the run before it can end, on a loaded machine too
ARGS = ["--set", "train.threads=1",
        "--set", f"train.epochs={EPOCHS}", "--set", "train.checkpoint_interval_s=0", "--set", "log.every=7",
        "--set", "log.tensorboard=false", "--set", "log.histograms_every=0"]



def epochs_logged(run_dir):
    path = run_dir / "metrics.jsonl"
    return path.read_text().count('"val/loss"') if path.exists() else 0


def started_training(run_dir):
    path = run_dir / "metrics.jsonl"
    return path.exists() and path.stat().st_size > 0


def weights(run_dir, which="last"):
    return torch.load(run_dir / "checkpoints" / f"{which}.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    result = run_cli("train", "--config", config_path("mlp"), "--run-dir", run_dir, "--quiet", *ARGS)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.parametrize("signum, code, epochs_done", [(signal.SIGINT, 130, 0), (signal.SIGTERM, 143, 0),
                                                      (signal.SIGINT, 130, 3)])
def test_signal_checkpoints_and_resume_is_bit_identical(tmp_path, straight_run, signum, code, epochs_done):
    run_dir = tmp_path / "run"
    proc = start_cli("train", "--config", config_path("mlp"), "--run-dir", run_dir, *ARGS)
    # At the first epoch's checkpoint, or once some epochs are done (the run is paused there, so it cannot finish
    # before the signal arrives: EPOCHS take under a second).
    wait_for(lambda: started_training(run_dir) and epochs_logged(run_dir) >= epochs_done)
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"Resume with: manualnet train --resume {run_dir}" in err
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert state["step"] > 0
    resumed = run_cli("train", "--resume", run_dir, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    for name, tensor in weights(straight_run).items():
        assert torch.equal(tensor, weights(run_dir)[name]), name
    assert summary(run_dir)["test/loss"] == summary(straight_run)["test/loss"]
    # The logging interval's running sums were saved: every metric is the straight run's, the rows included.
    assert without_rates(metrics(run_dir)) == without_rates(metrics(straight_run))


def without_rates(rows):
    return [{k: v for k, v in row.items() if k != "samples_per_sec"} for row in rows]


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_sigkill_leaves_a_loadable_checkpoint_and_resume_finishes(tmp_path, straight_run, delay):
    run_dir = tmp_path / "run"
    proc = start_cli("train", "--config", config_path("mlp"), "--run-dir", run_dir, *ARGS)
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
    time.sleep(delay)
    proc.kill()
    proc.communicate(timeout=30)
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert state["epoch"] >= 1
    stale = run_dir / "checkpoints" / ".last.pt.x1y2z3.tmp"  # as a kill during a save leaves it
    stale.write_bytes(b"half a checkpoint")
    resumed = run_cli("train", "--resume", run_dir, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert summary(run_dir)["epochs"] == EPOCHS
    assert not stale.exists()
    for name, tensor in weights(straight_run).items():  # the epochs replayed after the kill are the same
        assert torch.equal(tensor, weights(run_dir)[name]), name
    # The rows logged after the checkpoint by the killed process were dropped: no step is there twice.
    assert without_rates(metrics(run_dir)) == without_rates(metrics(straight_run))


def finished_run(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config_path("regression")), "--run-dir", str(run_dir), "--quiet",
                 "--set", "train.epochs=1", "--set", "log.tensorboard=false"]) == 0
    return run_dir


def test_truncated_checkpoint_is_refused_clearly(tmp_path, capsys):
    run_dir = finished_run(tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:200])
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "train.epochs=2"]) == 2
    assert "truncated or corrupted checkpoint" in capsys.readouterr().err


class Payload:
    def __reduce__(self):
        return (print, ("this ran at load time",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError) as refused:
        checkpoint.load(path)
    assert str(refused.value) == (f"{path}: refused to load: it holds pickled objects other than tensors and plain "
                                  "data (print), which could run code")  # torch's paragraph left out


def test_checkpoint_of_another_model_shape_names_the_mismatch(tmp_path, capsys):
    run_dir = finished_run(tmp_path)
    capsys.readouterr()
    code = main(["train", "--resume", str(run_dir), "--set", "model.0.bias=false", "--set", "train.epochs=2"])
    assert code == 2
    assert "unexpected 0.bias" in capsys.readouterr().err


def test_atomic_save_keeps_the_previous_checkpoint_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"model": {"w": torch.ones(2)}}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save({"model": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["model"]["w"], torch.ones(2))
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("hard_links", [True, False], ids=["hard-link", "no-hard-links"])
def test_best_checkpoint_keeps_its_state_when_last_is_replaced(tmp_path, monkeypatch, hard_links):
    if not hard_links:
        def refuse(*args, **kwargs):
            raise OSError("operation not permitted")

        monkeypatch.setattr(checkpoint.os, "link", refuse)
    writer = checkpoint.Writer()
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    writer.submit({"model": {"w": torch.ones(2)}}, [last, best])
    writer.submit({"model": {"w": torch.zeros(2)}}, [last])
    writer.flush()
    assert torch.equal(checkpoint.load(best)["model"]["w"], torch.ones(2))
    assert torch.equal(checkpoint.load(last)["model"]["w"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_divergence_exits_1_naming_step_and_layer(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train", "--config", config_path("regression"), "--run-dir", run_dir,
                     "--set", "optim.lr=1e6", "--set", "log.tensorboard=false", "--quiet")
    assert result.returncode == 1, result.stderr
    # The weights grow until the squared error overflows: the loss is the first non-finite value.
    assert "training diverged at step 4: the loss is inf; first non-finite value: the loss (MSELoss), in forward" \
        in result.stderr
    assert result.stderr.endswith(f"so none was written (its logs: {run_dir})\n")  # --quiet prints no other path
    assert "Traceback" not in result.stderr


NAN_GRADIENT = """
import manualnet


@manualnet.register_layer("NaNAfter")
class NaNAfter(manualnet.Module):
    # The identity, whose backward turns non-finite from its after-th call on (the loss stays finite).

    def __init__(self, after=30):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x):
        return x

    def backward(self, dy):
        self.calls += 1
        return dy * float("nan") if self.calls >= self.after else dy
"""


def test_a_non_finite_gradient_under_a_finite_loss_stops_the_run_before_any_checkpoint_holds_it(tmp_path):
    (tmp_path / "nan_after.py").write_text(NAN_GRADIENT)
    config = yaml.safe_load(config_path("mlp").read_text())
    config["plugins"] = [str(tmp_path / "nan_after.py")]
    config["model"].insert(1, {"type": "NaNAfter", "after": 30})  # epoch 1 has 20 steps: one checkpoint first
    config["log"] = {"every": 1000, "tensorboard": False, "histograms_every": 0}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    result = run_cli("train", "--config", tmp_path / "c.yaml", "--run-dir", run_dir, "--quiet")
    assert result.returncode == 1, result.stderr
    # Step 30's backward is non-finite, its update spreads it into layer 0's weights, and step 31's loss
    # (checked before its backward, while step 30's gradients are still there) stops the run.
    assert "training diverged at step 31: the loss is nan; first non-finite value: parameter 0.weight (the " \
        "previous update made it non-finite: its backward gave layer 0 (Linear) a non-finite dweight)" \
        in result.stderr
    kept = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert kept["step"] == 20 and all(torch.isfinite(t).all() for t in kept["model"].values())


INF_IN_EVAL = """
import manualnet


@manualnet.register_layer("InfInEval")
class InfInEval(manualnet.Module):
    # The identity while training; infinite outputs in eval mode, from the second validation on.

    def __init__(self):
        super().__init__()
        self.evaluations = 0

    def forward(self, x):
        if not self.training and len(x) > 2:  # a validation pass, not the build's 2-row probe
            self.evaluations += 1
        return x * float("inf") if self.evaluations >= 2 else x

    def backward(self, dy):
        return dy
"""


def test_a_non_finite_validation_loss_stops_before_its_checkpoint_replaces_the_last(tmp_path):
    (tmp_path / "inf_in_eval.py").write_text(INF_IN_EVAL)
    config = yaml.safe_load(config_path("mlp").read_text())
    config["plugins"] = [str(tmp_path / "inf_in_eval.py")]
    config["model"].insert(1, {"type": "InfInEval"})
    config["log"] = {"tensorboard": False, "histograms_every": 0}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    result = run_cli("train", "--config", tmp_path / "c.yaml", "--run-dir", run_dir, "--quiet")
    assert result.returncode == 1, result.stderr
    assert "training diverged in epoch 2: the validation loss is nan while the training loss was finite" \
        in result.stderr
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"] == 1


def test_a_non_finite_gradient_on_a_logging_step_is_caught_by_its_norm(tmp_path):
    (tmp_path / "nan_after.py").write_text(NAN_GRADIENT)
    config = yaml.safe_load(config_path("mlp").read_text())
    config["plugins"] = [str(tmp_path / "nan_after.py")]
    config["model"].insert(1, {"type": "NaNAfter", "after": 30})
    config["log"] = {"every": 10, "tensorboard": False, "histograms_every": 0}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("train", "--config", tmp_path / "c.yaml", "--run-dir", tmp_path / "run", "--quiet")
    assert result.returncode == 1, result.stderr
    assert "training diverged at step 30: the loss is " in result.stderr
    assert "but the gradient norm is nan; first non-finite value: layer 1 (NaNAfter) dx, in backward" \
        in result.stderr


def test_weights_made_non_finite_by_an_epoch_s_last_update_are_never_checkpointed(tmp_path):
    (tmp_path / "nan_after.py").write_text(NAN_GRADIENT)
    config = yaml.safe_load(config_path("mlp").read_text())
    config["plugins"] = [str(tmp_path / "nan_after.py")]
    config["model"].insert(1, {"type": "NaNAfter", "after": 40})  # step 40 ends epoch 2
    config["train"]["checkpoint_interval_s"] = 0
    config["log"] = {"every": 1000, "tensorboard": False, "histograms_every": 0}
    config["train"]["eval_every"] = 1000  # no validation pass would see the non-finite weights first
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    result = run_cli("train", "--config", tmp_path / "c.yaml", "--run-dir", run_dir, "--quiet")
    assert result.returncode == 1, result.stderr
    assert "training diverged by step 40: parameter 0.weight (the previous update made it non-finite: its " \
           "backward gave layer 0 (Linear) a non-finite dweight); it is not checkpointed" in result.stderr
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["step"] == 20
