"""What a run guarantees about its files: damaged checkpoints refused, atomic writes, one run per directory,
write failures reported in one line with exit code 3, signals during teardown quiet."""

import dataclasses
import errno
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch
import yaml

from manualnet import files
from manualnet.cli.main import main
from manualnet.errors import CheckpointError, RunDirError, StorageError
from manualnet.training import checkpoint
from manualnet.training.run_dir import RunLock
from tests.helpers import ROOT, config_path, metrics, run_cli, start_cli, summary, wait_for

QUICK = ["--set", "log.tensorboard=false", "--set", "log.histograms_every=0"]
LONG = ["--set", "train.epochs=200", "--set", "train.checkpoint_interval_s=0", *QUICK]  # stopped before it ends


def finished_run(tmp_path, epochs=1, *extra):
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config_path("regression")), "--run-dir", str(run_dir), "--quiet",
                 "--set", f"train.epochs={epochs}", "--set", "train.checkpoint_interval_s=0", *QUICK, *extra]) == 0
    return run_dir


def same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def tensor_data_offsets(path):
    """Where the bytes of each tensor record lie in a torch.save archive."""
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            if "/data/" in info.filename and info.file_size:
                f.seek(info.header_offset + 26)
                name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
                start = info.header_offset + 30 + name_len + extra_len
                yield from range(start, start + info.file_size)


def replaced_with_flip(path, offset, bit=0):
    """``path`` rewritten as a new file with one bit flipped (a new inode: best.pt, hard-linked, keeps its own)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.unlink()
    path.write_bytes(bytes(data))


def test_a_flipped_bit_anywhere_is_refused_or_changes_nothing(tmp_path):
    state = {"model": {"0.weight": torch.randn(8, 5), "0.bias": torch.randn(8)}, "optim": {"lr": 0.1},
             "epoch": 3, "config": {"train": {"batch_size": 16}}, "rng": {"torch": torch.get_rng_state()}}
    path = tmp_path / "last.pt"
    checkpoint.save(state, path)
    data, loaded_anyway = path.read_bytes(), []
    for offset in range(0, len(data), 11):  # every part of the archive: headers, pickle, tensors, directory, digest
        flipped = tmp_path / "flipped.pt"
        flipped.write_bytes(data[:offset] + bytes([data[offset] ^ (1 << offset % 8)]) + data[offset + 1:])
        try:
            loaded = checkpoint.load(flipped)
        except CheckpointError:
            continue
        assert same(loaded, state), f"a flip at byte {offset} loaded different values"
        loaded_anyway.append(offset)
    # Only a flip in the digest's own label goes unnoticed (the file then reads as one from before digests,
    # whose CRCs hold): its content is whole.
    label = range(len(data) - len(checkpoint.DIGEST_PREFIX) - 64, len(data) - 64)
    assert loaded_anyway and all(offset in label for offset in loaded_anyway), loaded_anyway


def test_a_checkpoint_from_before_digests_is_checked_by_its_crcs(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.arange(64.0)}}, path)  # as manualnet wrote them before: no digest
    assert torch.equal(checkpoint.load(path)["model"]["w"], torch.arange(64.0))
    replaced_with_flip(path, next(tensor_data_offsets(path)) + 100, bit=3)
    with pytest.raises(CheckpointError, match="the checksum of its record 'old/data/0' does not match"):
        checkpoint.load(path)


def test_a_flipped_bit_in_a_weight_is_refused_by_eval_and_resume(tmp_path, capsys):
    run_dir = finished_run(tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    weights = list(tensor_data_offsets(last))
    for offset in (weights[0], weights[len(weights) // 2], weights[-1]):
        replaced_with_flip(last, offset, bit=offset % 8)
        capsys.readouterr()
        assert main(["eval", "--run", str(run_dir), "--checkpoint", "last"]) == 2
        assert main(["train", "--resume", str(run_dir), "--set", "train.epochs=2"]) == 2
        err = capsys.readouterr().err
        assert err.count(f"manualnet: error: {last}: corrupted checkpoint (its SHA-256 does not match") == 2, err
        replaced_with_flip(last, offset, bit=offset % 8)  # flipped back: whole again
    assert checkpoint.load(last)["epoch"] == 1


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save({"model": {"w": torch.ones(100)}}, path)
    for size in (10, path.stat().st_size // 2, path.stat().st_size - 1):
        cut = tmp_path / f"cut{size}.pt"
        cut.write_bytes(path.read_bytes()[:size])
        with pytest.raises(CheckpointError, match="truncated or corrupted"):
            checkpoint.load(cut)


@pytest.mark.parametrize("damage", ["empty", "garbage", "missing"])
def test_a_damaged_config_yaml_resumes_from_the_checkpoint_s_config(tmp_path, capsys, damage):
    run_dir = finished_run(tmp_path)
    config = run_dir / "config.yaml"
    if damage == "missing":
        config.unlink()
    else:
        config.write_bytes(b"" if damage == "empty" else b"\xff\xfe: [")
    capsys.readouterr()
    assert main(["eval", "--run", str(run_dir), "--checkpoint", "last"]) == 0
    assert main(["train", "--resume", str(run_dir), "--set", "train.epochs=2", "--quiet"]) == 0
    assert "; using the config saved in the checkpoint" in capsys.readouterr().err
    assert yaml.safe_load(config.read_text())["train"]["epochs"] == 2  # written again, whole
    assert summary(run_dir)["epochs"] == 2


def test_atomic_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    path = tmp_path / "config.yaml"
    files.write_text(path, "old: 1\n")

    def half_then_full_disk(f):
        f.write(b"new: ")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(StorageError, match=f"cannot write {path}: No space left on device"):
        files.atomic_write(path, half_then_full_disk)
    assert path.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_refused_resume_writes_nothing(tmp_path, capsys):
    run_dir = finished_run(tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    state = checkpoint.load(last)
    state["batch"] = 2  # as if stopped two batches into the next epoch
    last.unlink()
    checkpoint.save(state, last)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "train.batch_size=8", "--set", "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint is 2 batches into epoch 2, with train.batch_size = 32; it cannot go on with 8" in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_a_locked_run_directory_is_refused_and_free_again_after(tmp_path, capsys):
    run_dir = finished_run(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with RunLock(run_dir), RunLock(empty):
        capsys.readouterr()
        assert main(["train", "--resume", str(run_dir), "--set", "train.epochs=2"]) == 2
        assert main(["train", "--config", str(config_path("regression")), "--run-dir", str(empty)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [f"manualnet: error: {d} is in use: another manualnet process is training in it (it holds "
                       "the directory's lock); wait for it to end, or use another directory" for d in (run_dir, empty)]
        assert list(empty.iterdir()) == []
    assert main(["train", "--resume", str(run_dir), "--set", "train.epochs=2", "--quiet"]) == 0


def test_a_killed_process_leaves_no_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                               "from manualnet.training.run_dir import RunLock; "
                               f"lock = RunLock({str(tmp_path)!r}); print('locked', flush=True); time.sleep(60)"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirError, match="is in use"):
        RunLock(tmp_path)
    holder.kill()
    holder.wait()
    RunLock(tmp_path).release()


def test_two_runs_started_together_in_one_directory_one_runs_one_is_refused(tmp_path):
    trials = [tmp_path / f"run{i}" for i in range(2)]  # two trials at once, two runs each
    procs = [(run_dir, start_cli("train", "--config", config_path("regression"), "--run-dir", run_dir, "--quiet",
                                 "--set", "train.epochs=3", *QUICK)) for run_dir in trials for _ in range(2)]
    results = {}
    for run_dir, proc in procs:
        _, err = proc.communicate(timeout=120)
        results.setdefault(run_dir, []).append((proc.returncode, err))
    for run_dir, outcomes in results.items():
        assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
        refused = next(err for code, err in outcomes if code == 2).strip().splitlines()
        assert len(refused) == 1 and ("is in use" in refused[0] or "is not empty" in refused[0]), refused
        assert [row["epoch"] for row in metrics(run_dir) if "val/loss" in row] == [1, 2, 3]  # one run's rows


def test_a_resume_of_a_directory_a_process_is_training_in_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    proc = start_cli("train", "--config", config_path("mlp"), "--run-dir", run_dir, "--quiet", *LONG)
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
        capsys.readouterr()
        assert main(["train", "--resume", str(run_dir)]) == 2
        assert f"manualnet: error: {run_dir} is in use: another manualnet process is training in it" \
            in capsys.readouterr().err
        assert proc.poll() is None  # the run it found there goes on
    finally:
        proc.kill()
        proc.communicate()


def _removed(path):
    try:
        shutil.rmtree(path)
    except OSError:
        return False
    return True


def test_deleting_the_run_directory_stops_the_run_with_exit_3(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_cli("train", "--config", config_path("mlp"), "--run-dir", run_dir, "--quiet", *LONG)
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
    wait_for(lambda: _removed(run_dir))  # as `rm -rf`, again if the run wrote a file into a folder being emptied
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    [line] = err.strip().splitlines()  # the next checkpoint write notices: last.pt, or best.pt on its own
    # the write can land while rmtree is halfway: checkpoints/ gone and the run directory not yet, or its
    # temporary file removed from a checkpoints/ that rmtree has yet to take away
    run = re.escape(str(run_dir))
    assert re.fullmatch(rf"manualnet: error: cannot write {run}/checkpoints/(last|best)\.pt: "
                        rf"({run}(/checkpoints)? no longer exists \(deleted or moved during the run\)"
                        rf"|No such file or directory)", line), line


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_write_that_fails_is_one_line_exit_3_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys, code):
    run_dir = finished_run(tmp_path, 2, "--set", "optim.lr=0.001")  # every epoch improves: best.pt is last.pt
    real_mkstemp = files.tempfile.mkstemp

    def failing_mkstemp(*args, **kwargs):
        if kwargs.get("prefix", "").startswith(".last.pt."):
            raise OSError(code, os.strerror(code))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(files.tempfile, "mkstemp", failing_mkstemp)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "train.epochs=4", "--quiet"]) == 3
    last = run_dir / "checkpoints" / "last.pt"
    assert capsys.readouterr().err.splitlines() == [f"manualnet: error: cannot write {last}: {os.strerror(code)}"]
    assert checkpoint.load(last)["epoch"] == 2
    assert checkpoint.load(run_dir / "checkpoints" / "best.pt")["epoch"] <= 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.pt", "last.pt"]


def test_a_kill_between_last_pt_and_its_link_to_best_pt_is_mended_on_resume(tmp_path):
    run_dir = finished_run(tmp_path, 2, "--set", "optim.lr=0.001")  # every epoch improves: best.pt is last.pt
    folder = run_dir / "checkpoints"
    expected = summary(run_dir)
    stale = checkpoint.load(folder / "best.pt")  # as the epoch before's best.pt, which the link would replace
    stale.update(epoch=1, step=stale["step"] // 2, model={k: torch.zeros_like(v) for k, v in stale["model"].items()})
    (folder / "best.pt").unlink()
    checkpoint.save(stale, folder / "best.pt")
    (run_dir / "summary.json").unlink()  # killed before the run's end: the resume evaluates best.pt
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert os.path.samefile(folder / "best.pt", folder / "last.pt")
    assert summary(run_dir)["test/loss"] == expected["test/loss"]
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]
    assert [row["test/loss"] for row in metrics(run_dir) if "test/loss" in row] == [expected["test/loss"]]  # once


def test_a_checkpoint_written_while_the_best_weights_wait_for_best_pt_carries_them(tmp_path):
    from manualnet.config.load import load_config
    from manualnet.config.setup import build
    from manualnet.training.trainer import Trainer

    trainer = Trainer(build(load_config(config_path("regression"), QUICK[1::2])), tmp_path, quiet=True)
    keeper = trainer.checkpoints
    keeper.improved({"val/loss": 1.0})  # step 0 is the best so far; its weights wait in memory
    trainer.at.step = 5
    keeper.save()  # a later step's checkpoint: last.pt, then best.pt
    keeper.writer.flush()
    folder = tmp_path / "checkpoints"
    last, best = checkpoint.load(folder / "last.pt"), checkpoint.load(folder / "best.pt")
    assert best["step"] == 0 and same(last["best_model"], best["model"])
    keeper.improved({"val/loss": 0.5})  # the best is this step's: last.pt is best.pt, nothing carried
    keeper.save()
    keeper.writer.flush()
    assert "best_model" not in checkpoint.load(folder / "last.pt")
    trainer.log.close()


def test_a_kill_before_a_waiting_best_pt_is_written_is_mended_on_resume(tmp_path):
    run_dir = finished_run(tmp_path, 2, "--set", "optim.lr=0.001")
    folder = run_dir / "checkpoints"
    state = checkpoint.load(folder / "last.pt")
    # as such a kill leaves it: last.pt says epoch 1 is the best and carries its weights; best.pt is older
    best_model = {k: v + 1 for k, v in state["model"].items()}
    state.update(best={**state["best"], "epoch": 1, "step": state["step"] // 2}, best_model=best_model)
    for name in ("last.pt", "best.pt"):
        (folder / name).unlink()
    checkpoint.save(state, folder / "last.pt")
    checkpoint.save({**state, "model": {k: torch.zeros_like(v) for k, v in best_model.items()}, "epoch": 0,
                     "step": 0}, folder / "best.pt")
    (run_dir / "summary.json").unlink()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    saved = checkpoint.load(folder / "best.pt")
    assert saved["epoch"] == 1 and same(saved["model"], best_model)
    assert summary(run_dir)["best_epoch"] == 1


@pytest.mark.parametrize("tensorboard", [True, False])
def test_summary_json_comes_after_every_metrics_row_is_on_disk(tmp_path, monkeypatch, tensorboard):
    from manualnet.training import trainer

    seen = []

    def recording_write_text(path, text):  # summary.json marks the run as done: a kill after it loses nothing
        if path.name == "summary.json":
            seen.append([row for row in metrics(path.parent) if "test/loss" in row])
        files.write_text(path, text)

    monkeypatch.setattr(trainer, "write_text", recording_write_text)
    finished_run(tmp_path, 1, "--set", f"log.tensorboard={str(tensorboard).lower()}")
    assert len(seen) == 1 and len(seen[0]) == 1


def test_the_file_size_limit_is_one_line_exit_3(tmp_path):
    def limit():  # the mlp's checkpoints are about 160 kB; metrics.jsonl stays under the limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "manualnet", "train", "--config", str(config_path("mlp")),
                             "--run-dir", str(run_dir), "--quiet", "--set", "train.epochs=2", *QUICK],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=120, preexec_fn=limit)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"manualnet: error: cannot write {run_dir}/checkpoints/last.pt: the file-size limit was reached (ulimit -f)"]
    assert list((run_dir / "checkpoints").iterdir()) == []


def test_a_resume_drops_undecodable_and_out_of_range_metrics_rows(tmp_path):
    run_dir = finished_run(tmp_path)
    jsonl = run_dir / "metrics.jsonl"
    kept = jsonl.read_bytes()
    jsonl.write_bytes(kept + b'{"step": 1e999, "epoch": 0}\n\xff\xfe not utf-8\n{"step": 2')
    assert main(["train", "--resume", str(run_dir), "--set", "train.epochs=2", "--quiet"]) == 0
    rows = metrics(run_dir)
    assert jsonl.read_bytes().startswith(kept)
    assert [row["epoch"] for row in rows if "val/loss" in row] == [1, 2]



@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_second_signal_exits_128_plus_its_number_without_a_traceback(tmp_path, signum, code):
    run_dir = tmp_path / "run"
    proc = start_cli("train", "--config", config_path("mlp"), "--run-dir", run_dir, *LONG)
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
    proc.send_signal(signal.SIGSTOP)  # both arrive together: the second while the first is being handled
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    time.sleep(0.001)
    proc.send_signal(signum)
    for _ in range(3):  # and more as it tears down
        time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (code, -signum), err  # -signum: killed during the interpreter's own shutdown
    assert "Traceback" not in err
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"] >= 1


def test_stopped_at_once_carries_the_signal_s_exit_code():
    from manualnet.errors import StoppedAtOnce

    assert StoppedAtOnce(signal.SIGTERM).exit_code == 143
    assert str(StoppedAtOnce(signal.SIGINT)) == "stopped at once by a second SIGINT; the previous checkpoint is kept"



def test_a_checkpoint_names_its_running_sums_and_the_metric_its_best_epoch_was_chosen_by(tmp_path):
    from manualnet.training.metrics import RunningMetrics, Sums

    running = RunningMetrics()
    running.add(0.5, 3, 4)
    state = running.state_dict()
    assert set(state["epoch"]) == {f.name for f in dataclasses.fields(Sums)}  # by name, not by position
    older = {**state, "epoch": list(state["epoch"].values()), "interval": list(state["interval"].values())}
    for saved in (state, older):  # a checkpoint of the previous version stored them as lists
        again = RunningMetrics()
        again.load_state_dict(saved)
        assert again.epoch == running.epoch and again.interval == running.interval
    no_val = run_cli("train", "--config", config_path("spirals"), "--set", "train.epochs=2", "--set",
                     "data.val_fraction=0", "--run-dir", tmp_path / "r", "--quiet")
    assert no_val.returncode == 0, no_val.stderr
    best = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=False)["best"]
    assert set(best) == {"train/loss", "epoch", "step"}  # chosen by train loss: it says so


@pytest.mark.parametrize("change", ["seed=5", "data.val_fraction=0.2", "data.standardize=false", "data.arms=4"])
def test_a_resume_refuses_a_seed_or_data_change_that_would_reshuffle_what_the_run_trained_on(tmp_path, change):
    run_dir = tmp_path / "r"
    first = run_cli("train", "--config", config_path("spirals"), "--set", "train.epochs=1", "--run-dir", run_dir,
                    "--quiet", *QUICK)
    assert first.returncode == 0, first.stderr
    config_before = (run_dir / "config.yaml").read_text()
    refused = run_cli("train", "--resume", run_dir, "--set", change, "--set", "train.epochs=2", "--quiet")
    assert refused.returncode == 2 and "a resumed run keeps its seed and data" in refused.stderr, refused.stderr
    assert (run_dir / "config.yaml").read_text() == config_before
    key, _, value = change.partition("=")
    edited = yaml.safe_load(config_before)
    section = edited.setdefault("data", {}) if key.startswith("data.") else edited
    section[key.removeprefix("data.")] = yaml.safe_load(value)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(edited))  # the same change, by hand
    refused = run_cli("train", "--resume", run_dir, "--set", "train.epochs=2", "--quiet")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith(f"manualnet: error: {run_dir / 'config.yaml'} (edited since the run's last "
                                     f"checkpoint): {key}="), refused.stderr
    (run_dir / "config.yaml").write_text(config_before)
    typo = run_cli("train", "--resume", run_dir, "--set", "train.epochs=x", "--quiet")  # named as the --set's
    assert typo.returncode == 2 and typo.stderr.startswith("manualnet: error: --set train.epochs=x: "), typo.stderr
    more = run_cli("train", "--resume", run_dir, "--set", "train.epochs=2", "--quiet")
    assert more.returncode == 0, more.stderr


def test_a_resume_without_its_best_pt_chooses_the_best_again_rather_than_mislabel_the_last(tmp_path):
    run_dir = tmp_path / "r"
    first = run_cli("train", "--config", config_path("spirals"), "--set", "train.epochs=2", "--run-dir", run_dir,
                    "--quiet", *QUICK)
    assert first.returncode == 0, first.stderr
    folder = run_dir / "checkpoints"
    state = checkpoint.load(folder / "last.pt")  # as if epoch 1 had been the best, and best.pt then deleted
    state.update(best={**state["best"], "epoch": 1, "step": state["step"] // 2})
    for name in ("last.pt", "best.pt"):
        (folder / name).unlink()
    checkpoint.save(state, folder / "last.pt")
    resumed = run_cli("train", "--resume", run_dir, "--set", "train.epochs=3", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "best.pt is missing: the best epoch's weights" in resumed.stderr
    assert summary(run_dir)["best_epoch"] == 3 and (run_dir / "checkpoints" / "best.pt").is_file()
