"""Bad input: exit code 2 and one line naming the problem, never a traceback.

Each case runs the CLI entry point (in-process, so any exception other than the project's own errors would
escape and fail the test) and checks the exit code and the message.
"""

from pathlib import Path

import pytest
import torch
import yaml

from manualnet.cli.main import main
from tests.helpers import config_path, run_cli

BASE = {
    "name": "t", "data": {"dataset": "xor", "val_fraction": 0.2, "test_fraction": 0.2},
    "model": [{"type": "Linear", "out_features": 8}, {"type": "ReLU"}, {"type": "Linear", "out_features": 2}],
    "train": {"epochs": 1, "batch_size": 16}, "log": {"tensorboard": False},
}


def write_config(tmp_path, raw=None, text=None):
    path = tmp_path / "config.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(raw))
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def expect_error(capsys, fragment, *args):
    code, err = run(capsys, *args)
    assert code == 2, err
    assert fragment in err, err
    assert "Traceback" not in err
    return err


def with_changes(**changes):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for path, value in changes.items():
        node, parts = raw, path.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[int(parts[-1]) if isinstance(node, list) else parts[-1]] = value
    return raw


@pytest.mark.parametrize("changes, fragment", [
    ({"train__epcohs": 3}, "train.epcohs: unknown key (did you mean 'epochs'?)"),
    ({"optim": {"type": "SGD", "lr": "fast"}}, "optim.lr"),
    ({"optim": {"type": "SGD", "lr": -1.0}}, "lr"),
    ({"train__batch_size": 0}, "train.batch_size"),
    ({"data__val_fraction": 1.0}, "data.val_fraction"),
    ({"model__1": {"type": "Dropout", "p": 1.0}}, "model.1.p: expected a number in [0, 1), got 1.0"),
    ({"model__1": {"type": "Relu"}}, "unknown layer 'Relu' (did you mean 'ReLU'?)"),
    ({"loss": {"type": "CrossEntropy"}}, "unknown loss 'CrossEntropy' (did you mean 'CrossEntropyLoss'?)"),
    ({"optim": {"type": "Adma", "lr": 0.1}}, "unknown optimizer 'Adma' (did you mean 'Adam'?)"),
    ({"schedule": {"type": "cosin"}}, "(did you mean 'cosine'?)"),
    ({"data__dataset": "digts"}, "(did you mean 'digits'?)"),
    ({"model__0": {"type": "Linear", "out_features": 8, "in_features": 7}},
     "layer 0 (Linear) expects 7 input features, gets 2"),
    ({"model__2": {"type": "Linear", "out_features": 3}}, "has 2 classes"),
    ({"model__0": {"type": "Linear", "out_feature": 8}}, "(did you mean 'out_features'?)"),
    ({"device": "cuda"}, "CUDA is not available"),
    ({"plugins": ["no_such_plugin.py"]}, "plugin file no_such_plugin.py not found"),
    ({"name": "../../escape"}, "name: expected a run name (the directory under runs/)"),
    ({"train__grad_clip": float("inf")}, "train.grad_clip: input should be a finite number, got inf"),
    ({"train__epochs": True}, "train.epochs: input should be a valid integer, got True"),
    ({"train__batch_size": 2.5}, "train.batch_size: input should be a valid integer"),
])
def test_bad_config_exits_2_with_a_clear_message(tmp_path, capsys, changes, fragment):
    if changes.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = write_config(tmp_path, with_changes(**changes))
    expect_error(capsys, fragment, "train", "--config", path, "--run-dir", tmp_path / "run")


def test_layer_sizes_that_do_not_chain_name_the_layer(tmp_path, capsys):
    raw = with_changes(model__2={"type": "Linear", "in_features": 7, "out_features": 2})
    expect_error(capsys, "layer 2 (Linear) expects 7 input features, gets 8", "train", "--config",
                 write_config(tmp_path, raw), "--run-dir", tmp_path / "run")


def test_loss_that_does_not_fit_the_targets(tmp_path, capsys):
    raw = with_changes(data__dataset="linear_regression", loss={"type": "CrossEntropyLoss"})
    expect_error(capsys, "needs class labels", "train", "--config", write_config(tmp_path, raw),
                 "--run-dir", tmp_path / "run")


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    path = write_config(tmp_path, text="name: x\nmodel:\n  - {type: Linear, out_features: 3\ntrain: {}\n")
    expect_error(capsys, "YAML syntax error at line", "train", "--config", path)


def test_top_level_not_a_mapping(tmp_path, capsys):
    expect_error(capsys, "top level must be a mapping", "train", "--config", write_config(tmp_path, text="[1, 2]"))


def test_missing_config_file(tmp_path, capsys):
    expect_error(capsys, "not found", "train", "--config", tmp_path / "missing.yaml")


def test_set_with_unknown_key(tmp_path, capsys):
    expect_error(capsys, "(did you mean 'epochs'?)", "train", "--config", write_config(tmp_path, BASE),
                 "--set", "train.epoch=3")


def test_set_with_wrong_type(tmp_path, capsys):
    expect_error(capsys, "train.epochs", "train", "--config", write_config(tmp_path, BASE),
                 "--set", "train.epochs=lots")


def test_plugin_that_fails_to_import_gives_path_and_error(tmp_path, capsys):
    plugin = tmp_path / "broken.py"
    plugin.write_text("import manualnet\nraise RuntimeError('boom at import')\n")
    raw = with_changes(plugins=[str(plugin)])
    err = expect_error(capsys, "failed to import: RuntimeError: boom at import", "train", "--config",
                       write_config(tmp_path, raw))
    assert str(plugin) in err and len(err.strip().splitlines()) == 1


def test_resume_of_a_run_stopped_before_its_first_checkpoint_trains_it_from_the_start(tmp_path, capsys):
    run_dir = tmp_path / "run"  # as a kill in the first epoch leaves it: its config, a row, no checkpoint
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(BASE))
    (run_dir / "metrics.jsonl").write_text('{"step": 10, "epoch": 1, "train/loss_step": 12.5}\n')
    code, err = run(capsys, "train", "--resume", run_dir, "--quiet")
    assert code == 0, err
    assert err.splitlines() == [f"manualnet: {run_dir} has no checkpoint (it stopped before the end of its first "
                                "epoch): training it from the start with its config.yaml"]
    assert (run_dir / "summary.json").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    assert "12.5" not in (run_dir / "metrics.jsonl").read_text()  # the lost epoch's rows are gone


@pytest.mark.parametrize("kept", [
    "checkpoints/best.pt",   # trained weights, last.pt deleted
    "summary.json",          # a finished run whose checkpoints were deleted
    "metrics.jsonl",         # an epoch's row: a run that trained past its first checkpoint
    "notes.md",              # not a run directory: a project folder with its own config.yaml
    "src/model.py",
])
def test_resume_without_last_pt_of_a_directory_holding_more_than_an_unfinished_first_epoch(tmp_path, capsys, kept):
    run_dir = tmp_path / "run"
    (run_dir / kept).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(BASE))
    content = '{"step": 15, "epoch": 1, "train/loss": 0.69}\n' if kept == "metrics.jsonl" else "keep me"
    (run_dir / kept).write_text(content)
    expect_error(capsys, "no checkpoint to resume from", "train", "--resume", run_dir)
    assert (run_dir / kept).read_text() == content and (run_dir / "config.yaml").read_text() == yaml.safe_dump(BASE)


@pytest.mark.parametrize("explicit", [True, False])
def test_bad_input_found_at_the_first_step_leaves_no_run_behind(tmp_path, capsys, monkeypatch, explicit):
    monkeypatch.chdir(tmp_path)  # runs/<name>/<timestamp> is made under the working directory
    raw = with_changes(loss={"type": "BCELoss"}, log={"tensorboard": True})  # logits where it takes probabilities
    args = ["--run-dir", tmp_path / "run"] if explicit else []
    expect_error(capsys, "BCELoss", "train", "--config", write_config(tmp_path, raw), *args)
    left = list((tmp_path / "run").iterdir()) if explicit else list((tmp_path / "runs" / "t").iterdir())
    assert left == []


def test_resume_of_a_missing_directory(tmp_path, capsys):
    expect_error(capsys, "no such run directory", "train", "--resume", tmp_path / "nope")


def test_run_dir_that_is_not_empty_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "taken"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep me")
    expect_error(capsys, "is not empty", "train", "--config", write_config(tmp_path, BASE), "--run-dir", run_dir)
    assert (run_dir / "precious.txt").read_text() == "keep me"


def test_device_flag_that_names_no_device(tmp_path, capsys):
    expect_error(capsys, "device: 'gpu' is not a device", "train", "--config", write_config(tmp_path, BASE),
                 "--device", "gpu")


@pytest.mark.parametrize("where", ["under-a-file", "unwritable"])
def test_run_dir_that_cannot_be_created(tmp_path, capsys, where):
    (tmp_path / "afile").write_text("")
    target = tmp_path / "afile" / "run" if where == "under-a-file" else "/proc/no-such-run"
    expect_error(capsys, "cannot create the run directory", "train", "--config", write_config(tmp_path, BASE),
                 "--run-dir", target)


def test_random_bytes_are_a_corrupted_checkpoint_not_an_unsafe_one(tmp_path):
    from manualnet.errors import CheckpointError
    from manualnet.training import checkpoint

    path = tmp_path / "last.pt"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        checkpoint.load(path)


def test_missing_dataset_files_say_which_and_where(tmp_path, capsys, monkeypatch):
    import manualnet.data.idx as idx

    monkeypatch.setattr(idx, "download", _offline, raising=False)
    raw = with_changes(data__dataset="mnist", data__root=str(tmp_path / "mnist"),
                       model__2={"type": "Linear", "out_features": 10})
    err = expect_error(capsys, "train-images-idx3-ubyte", "train", "--config", write_config(tmp_path, raw))
    assert str(tmp_path / "mnist") in err


def _offline(*args, **kwargs):
    raise OSError("network is unreachable")


def test_cli_subprocess_prints_one_line_and_no_traceback(tmp_path):
    path = write_config(tmp_path, with_changes(train__epcohs=3))
    result = run_cli("train", "--config", path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"manualnet: error: {path}: train.epcohs: unknown key (did you mean 'epochs'?)"]


def test_unknown_subcommand_and_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["trian"])
    assert e.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_a_key_written_twice_is_an_error_not_the_last_one_wins(tmp_path, capsys):
    text = yaml.safe_dump(BASE) + "optim:\n  type: SGD\n  lr: 0.1\n  lr: 0.5\n"
    line = len(text.splitlines())
    expect_error(capsys, f"line {line}, column 3: duplicate key 'lr' (each key may appear once in a mapping)",
                 "train", "--config", write_config(tmp_path, text=text), "--run-dir", tmp_path / "run")


def test_resume_refuses_a_config_file(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(write_config(tmp_path, BASE)), "--run-dir", str(run_dir), "--quiet"]) == 0
    expect_error(capsys, "--config cannot be combined with it (change a value with --set KEY=VALUE)",
                 "train", "--resume", run_dir, "--config", write_config(tmp_path, BASE))


def test_resume_refuses_fewer_epochs_than_the_run_has_done(tmp_path, capsys):
    run_dir = tmp_path / "run"
    raw = with_changes(train__epochs=3)
    assert main(["train", "--config", str(write_config(tmp_path, raw)), "--run-dir", str(run_dir), "--quiet"]) == 0
    err = expect_error(capsys, "the run has already trained 3 epochs, more than train.epochs = 2; to train more, "
                       "resume with --set train.epochs=N, N > 3", "train", "--resume", run_dir, "--set",
                       "train.epochs=2")
    assert len(err.splitlines()) == 1  # no "run directory:" line before the refusal


@pytest.mark.parametrize("command", ["train", "eval", "verify"])
@pytest.mark.parametrize("device", ["mps", "xla", "meta", "cpu:0"])  # cpu:0: as `--set device=` refuses it
def test_a_device_torch_knows_but_manualnet_does_not_run_on(tmp_path, capsys, command, device):
    path = write_config(tmp_path, BASE)
    if command == "eval":
        assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    args = {"train": ["--config", path, "--run-dir", tmp_path / "new"], "eval": ["--run", tmp_path / "run"],
            "verify": ["--config", path]}[command]
    expect_error(capsys, f"device: {device!r} is not supported; expected auto, cpu, cuda or cuda:N",
                 command, *args, "--device", device)


def csv_file(tmp_path, rows):
    path = tmp_path / "data.csv"
    path.write_text("a,b,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    return path


XOR_ROWS = [(i % 2, i // 2 % 2, (i % 2) ^ (i // 2 % 2)) for i in range(20)]


@pytest.mark.parametrize("changes, fragment", [
    ({"seed": 2**64}, "seed: input should be less than or equal to 18446744073709551615"),
    ({"model__0__out_features": -3}, "model.0.out_features: expected a whole number >= 0, got -3"),
    ({"model__0__out_features": 10**13}, "model.0 (Linear): cannot be built with these arguments: "),
    ({"train__dist_timeout_s": 1e300}, "train.dist_timeout_s: input should be less than or equal to 604800"),
    ({"train__threads": 100000}, "train.threads: expected auto or a number of threads (an integer from 1 to 1024)"),
    ({"optim": {"type": "SGD", "lr": 1e39}}, "optim.lr: 1e+39 overflows float32 (largest 3.4e+38)"),
    ({"optim": {"type": "SGD", "lr": "1e39"}}, "optim.lr: 1e39 overflows float32 (largest 3.4e+38)"),
])
def test_absurd_numbers_are_refused_before_training(tmp_path, capsys, changes, fragment):
    expect_error(capsys, fragment, "train", "--config", write_config(tmp_path, with_changes(**changes)),
                 "--run-dir", tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("delimiter", ["", ";;", '"', "\n"])
def test_a_csv_delimiter_must_be_one_character(tmp_path, capsys, delimiter):
    raw = with_changes(data={"dataset": "csv", "path": str(csv_file(tmp_path, XOR_ROWS)), "label": "y",
                             "delimiter": delimiter})
    expect_error(capsys, f"data.delimiter: expected one character that separates the columns (not a quote or a "
                 f"line break), got {delimiter!r}", "train", "--config", write_config(tmp_path, raw))


@pytest.mark.parametrize("label", ["inf", "-inf", "nan"])
def test_a_label_that_is_not_finite_names_its_line(tmp_path, capsys, label):
    rows = [*XOR_ROWS[:4], (1, 1, label), *XOR_ROWS[4:]]
    raw = with_changes(data={"dataset": "csv", "path": str(csv_file(tmp_path, rows)), "label": "y"})
    expect_error(capsys, f"line 6, column 'y': {label!r} is not a finite number", "train", "--config",
                 write_config(tmp_path, raw))


def test_infinite_npz_labels_name_the_sample(tmp_path, capsys):
    import numpy as np

    y = np.array([0.0, 1.0] * 10)
    y[3] = np.inf
    np.savez(tmp_path / "d.npz", x=np.arange(40.0).reshape(20, 2), y=y)
    raw = with_changes(data={"dataset": "npz", "path": str(tmp_path / "d.npz")})
    expect_error(capsys, "classification labels must be finite, got inf at sample 3", "train", "--config",
                 write_config(tmp_path, raw))


def test_a_feature_beyond_float32_is_bad_input_naming_its_column(tmp_path, capsys):
    rows = [*XOR_ROWS[:7], (0, "1e39", 1), *XOR_ROWS[7:]]
    raw = with_changes(data={"dataset": "csv", "path": str(csv_file(tmp_path, rows)), "label": "y"})
    expect_error(capsys, "data (csv): feature column 'b' holds 1e+39 (sample 7), beyond float32's range (largest "
                 "3.4e+38); rescale it, or set dtype: float64", "train", "--config", write_config(tmp_path, raw))
    raw["dtype"] = "float64"  # where it fits, it trains
    assert main(["train", "--config", str(write_config(tmp_path, raw)), "--run-dir", str(tmp_path / "run"),
                 "--quiet"]) == 0


@pytest.mark.parametrize("depth", [100, 600, 5000])
def test_yaml_nested_too_deeply(tmp_path, capsys, depth):
    text = yaml.safe_dump(BASE) + "extra: " + "[" * depth + "]" * depth + "\n"
    expect_error(capsys, "nested too deeply (a config has at most 64 levels)", "train", "--config",
                 write_config(tmp_path, text=text))
    expect_error(capsys, "--set data.x: nested too deeply (a config has at most 64 levels)", "train", "--config",
                 write_config(tmp_path, BASE), "--set", "data.x=" + "[" * depth + "]" * depth)


def test_a_config_file_of_megabytes_is_refused_at_once(tmp_path, capsys):
    path = write_config(tmp_path, text=yaml.safe_dump(BASE) + "big: [" + "0, " * 400_000 + "0]\n")
    expect_error(capsys, f"{path}: {path.stat().st_size} bytes is too large for a config (at most 1000000)",
                 "train", "--config", path)


def test_verify_json_to_a_path_that_cannot_be_written_is_refused_before_the_checks_run(tmp_path, capsys):
    config = write_config(tmp_path, BASE)
    for target, why in ((tmp_path / "no" / "such" / "report.json", f"{tmp_path / 'no' / 'such'} does not exist"),
                        (tmp_path, "is a directory")):
        assert main(["verify", "--config", str(config), "--json", str(target)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"manualnet: error: --json {target}: cannot write the report: {why}\n"


def test_a_plugin_raising_its_own_base_exception(tmp_path, capsys):
    plugin = tmp_path / "odd.py"
    plugin.write_text("class Odd(BaseException):\n    pass\n\n\nraise Odd('not an Exception')\n")
    expect_error(capsys, f"plugins: {plugin} failed to import: Odd: not an Exception", "train", "--config",
                 write_config(tmp_path, with_changes(plugins=[str(plugin)])))


def test_the_device_flag_is_recorded_in_the_runs_config(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, err = run(capsys, "train", "--config", write_config(tmp_path, BASE), "--run-dir", run_dir, "--device",
                    "cpu", "--quiet")
    assert code == 0, err
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["device"] == "cpu"


def test_bad_input_found_after_the_run_logged_keeps_the_run(tmp_path, capsys, monkeypatch):
    from manualnet.errors import LayerError
    from manualnet.training.trainer import Trainer

    step = Trainer.train_step

    def failing_at_step_12(self, *batch):
        if self.at.step == 11:
            raise LayerError("a bad batch")
        return step(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", failing_at_step_12)
    run_dir = tmp_path / "run"
    expect_error(capsys, "a bad batch", "train", "--config", write_config(tmp_path, with_changes(train__batch_size=4)),
                 "--run-dir", run_dir)
    assert '"step": 10,' in (run_dir / "metrics.jsonl").read_text()  # what it logged is there to look at


def test_every_layer_argument_out_of_range_is_named_at_once_with_the_rest(tmp_path, capsys):
    text = tmp_path / "tiny.txt"
    text.write_text("hello world, " * 40)
    raw = {"data": {"dataset": "text", "path": str(text), "block_size": 8, "windows": 16, "val_windows": 4},
           "model": [{"type": "GPT", "n_layer": 1, "n_head": 3, "n_embd": 8, "dropout": 1.5},
                     {"type": "GELU", "approximate": "tanhh"},
                     {"type": "LayerNorm", "normalized_shape": 8, "eps": -1}],
           "optim": {"type": "AdamW", "lr": -1}, "train": {"epochs": 1}}
    err = expect_error(capsys, "5 problems", "train", "--config", write_config(tmp_path, raw),
                       "--run-dir", tmp_path / "r")
    for line in ("model.0.n_head: expected a divisor of n_embd=8, got 3",
                 "model.0.dropout: expected a number in [0, 1)",
                 "model.1.approximate: expected 'none' or 'tanh', got 'tanhh'",
                 "model.2.eps: expected a finite number", "optim.lr: expected a finite number >= 0, got -1"):
        assert line in err, err


@pytest.mark.parametrize("key, value, fragment", [
    ("model.0.n_embd", 0, "--set model.0.n_embd=0: expected a whole number >= 1, got 0"),  # was a ZeroDivisionError
    ("data.block_size", 0, "--set data.block_size=0: expected a whole number >= 1"),  # was a reshape's RuntimeError
    ("data.windows", 0, "--set data.windows=0: expected a whole number >= 1"),  # was blamed on the schedule
    ("model.0.n_layer", 0, "--set model.0.n_layer=0: expected a whole number >= 1"),
])
def test_a_gpt_size_of_zero_is_named_by_its_key(tmp_path, capsys, key, value, fragment):
    expect_error(capsys, fragment, "train", "--config", config_path("charlm"), "--set", f"{key}={value}",
                 "--run-dir", tmp_path / "r")


@pytest.mark.parametrize("config, key, value, fragment", [
    ("spirals", "model.1.type", "Softmax --set model.1.dim=5", "model.1 (Softmax): cannot run with these arguments "
                                                               "on its input of shape (2, 64): Dimension out of range"),
    ("spirals", "model.1", "{type: Residual, block: 3}", "model.1.block: expected a Module or a list of them"),
])
def test_an_argument_torch_refuses_when_the_model_is_built_is_one_line(tmp_path, capsys, config, key, value, fragment):
    sets = f"{key}={value}".split(" --set ")
    expect_error(capsys, fragment, "train", "--config", config_path(config), *(a for s in sets for a in ("--set", s)),
                 "--run-dir", tmp_path / "r")


@pytest.mark.parametrize("key, value, expected", [
    ("model.0.kernel_size", "0", "expected a whole number >= 1, or a pair of them, got 0"),
    ("model.0.stride", "[1, 0]", "expected a whole number >= 1, or a pair of them, got [1, 0]"),
    ("model.0.padding", "-1", "expected a whole number >= 0, or a pair of them, got -1"),
    ("model.0.groups", "0", "expected a whole number >= 1, got 0"),
    ("model.0.kernel_size", "big", "expected int or a pair of int, got 'big'"),
    ("model.0.kernel_size", "[3, 3, 3]", "expected int or a pair of int, got [3, 3, 3]"),
    ("model.0.out_channels", "true", "input should be a number, not a boolean, got True"),
    ("model.3.kernel_size", "0", "expected a whole number >= 1, or a pair of them, got 0"),
    ("model.3.stride", "-2", "expected a whole number >= 1, or a pair of them, got -2"),
    ("optim.lr", "true", "input should be a number, not a boolean, got True"),
    ("model.1.eps", "-1", "expected a finite number >= 0, got -1"),
    ("model.1.momentum", "5", "expected a number from 0 to 1, or null (a cumulative average), got 5"),
])
def test_conv_pool_and_numeric_arguments_are_checked_in_one_line_before_the_model_is_built(tmp_path, capsys, key,
                                                                                           value, expected):
    code, err = run(capsys, "train", "--config", config_path("cnn_digits"), "--set", f"{key}={value}",
                    "--run-dir", tmp_path / "r")
    assert code == 2 and err == f"manualnet: error: --set {key}={value}: {expected}\n"


def test_a_gpt_on_a_data_set_of_feature_vectors_is_told_it_needs_text(tmp_path, capsys):
    expect_error(capsys, "model.0: GPT needs vocab_size and block_size, which a text data set gives (data: {dataset: "
                 "text, ...}); this data set gives feature vectors", "train", "--config",
                 write_config(tmp_path, {"data": {"dataset": "digits"},
                                         "model": [{"type": "GPT", "n_layer": 1, "n_head": 2, "n_embd": 8}]}),
                 "--run-dir", tmp_path / "r")


def test_a_run_name_too_long_for_a_directory_is_refused_in_a_line_of_readable_length(tmp_path, capsys):
    code, err = run(capsys, "train", "--config", config_path("spirals"), "--set", f"name={'b' * 300}",
                    "--run-dir", tmp_path / "r")
    assert code == 2 and "up to 255 letters" in err and "(300 characters)" in err and len(err) < 400


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_text_path_that_is_a_device_or_too_large_for_memory(tmp_path, capsys, monkeypatch):
    expect_error(capsys, "data.path: /dev/zero is not a regular file (a device or a pipe); expected a UTF-8 text "
                 "file", "train", "--config", config_path("charlm"), "--set", "data.path=/dev/zero",
                 "--run-dir", tmp_path / "r")
    text = tmp_path / "big.txt"
    text.write_text("abc" * 1000)

    read_text = Path.read_text

    def out_of_memory(self, *args, **kwargs):
        if self == text:
            raise MemoryError
        return read_text(self, *args, **kwargs)
    monkeypatch.setattr(Path, "read_text", out_of_memory)
    expect_error(capsys, f"data.path: {text} does not fit in memory (0 MB); a text data set is read whole", "train",
                 "--config", config_path("charlm"), "--set", f"data.path={text}", "--run-dir", tmp_path / "r")


def test_a_text_path_that_is_a_directory(tmp_path, capsys):
    expect_error(capsys, f"data.path: {tmp_path} is a directory; expected a UTF-8 text file", "train", "--config",
                 config_path("charlm"), "--set", f"data.path={tmp_path}", "--run-dir", tmp_path / "r")


def test_a_concat_of_one_input_in_a_chain_passes_its_gradient_on_as_a_layer_does(tmp_path):
    result = run_cli("train", "--config", config_path("spirals"), "--set", "model.1.type=Concat", "--set",
                     "train.epochs=1", "--run-dir", tmp_path / "r", "--quiet")
    assert result.returncode == 0, result.stderr


def test_resume_refuses_another_run_dir_a_file_and_an_end_inside_the_begun_epoch(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert main(["train", "--config", str(config_path("spirals")), "--set", "train.epochs=1", "--run-dir",
                 str(run_dir), "--quiet"]) == 0
    capsys.readouterr()
    expect_error(capsys, "--run-dir", "train", "--resume", run_dir, "--run-dir", tmp_path / "other")
    (tmp_path / "file").write_text("x")
    expect_error(capsys, f"--resume {tmp_path / 'file'}: not a directory", "train", "--resume", tmp_path / "file")
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    state.update(batch=3)  # as a stop three batches into epoch 2 leaves it
    torch.save(state, run_dir / "checkpoints" / "last.pt")
    expect_error(capsys, "3 batches into epoch 2; train.epochs = 1 would end the run before it", "train", "--resume",
                 run_dir)


def test_a_plugin_subclass_taking_other_arguments_is_checked_by_its_parents_constructor(tmp_path, capsys):
    (tmp_path / "square.py").write_text(
        "import manualnet as mn\n\n\n@mn.register_layer('Square')\nclass Square(mn.Linear):\n"
        "    def __init__(self, in_features: int, out_features: int | None = None):\n"
        "        super().__init__(in_features, out_features or in_features)\n")
    raw = with_changes(model__0={"type": "Square"}, plugins=[str(tmp_path / "square.py")])
    assert main(["train", "--config", str(write_config(tmp_path, raw)), "--run-dir", str(tmp_path / "r"),
                 "--quiet"]) == 0, capsys.readouterr().err


def test_sizes_may_be_numpy_integers_and_a_wrong_type_elsewhere_leaves_a_right_value_alone(tmp_path, capsys):
    import numpy as np

    import manualnet as mn

    assert mn.Linear(np.int64(4), np.int64(3)).weight.shape == (3, 4) and mn.GPT(np.int64(5), 4, 1, 1, 4)
    raw = with_changes(optim={"type": "SGD", "lr": "1e-1", "momentum": "fast"})  # '1e-1': YAML 1.1's string
    err = expect_error(capsys, "optim.momentum: input should be a valid number", "train", "--config",
                       write_config(tmp_path, raw), "--run-dir", tmp_path / "r")
    assert "optim.lr" not in err  # '1e-1' is 0.1, a valid lr, though momentum is wrong


def test_a_plugin_entry_that_is_a_directory_or_an_absolute_path_not_there(tmp_path, capsys):
    expect_error(capsys, f"{tmp_path} is a directory; expected a Python file", "train", "--config",
                 config_path("spirals"), "--set", f"plugins=[{tmp_path}]", "--run-dir", tmp_path / "r")
    err = expect_error(capsys, f"plugin file {tmp_path / 'no.py'} not found", "train", "--config",
                       config_path("spirals"), "--set", f"plugins=[{tmp_path / 'no.py'}]", "--run-dir", tmp_path / "r")
    assert "looked in the working directory" not in err  # an absolute path is looked for there alone
    (tmp_path / "plug.yaml").write_text("x: 1\n")
    expect_error(capsys, "plugins: plug.yaml is not a .py file; expected a Python file", "train", "--config",
                 write_config(tmp_path, {**BASE, "plugins": ["plug.yaml"]}), "--run-dir", tmp_path / "r")
    expect_error(capsys, "plugins: plugin file nope.py not found (looked in the working directory and the "
                       f"config file's folder, {tmp_path})", "train", "--config",
                       write_config(tmp_path, {**BASE, "plugins": ["nope.py"]}), "--run-dir", tmp_path / "r")


def test_a_ctrl_c_before_the_loop_handles_signals_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from manualnet.training.trainer import Trainer

    def interrupted(*args, **kwargs):  # as a Ctrl-C just before the loop installs its handlers
        raise KeyboardInterrupt

    run_dir = tmp_path / "r"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "fit", interrupted)
        code, err = run(capsys, "train", "--config", config_path("spirals"), "--run-dir", run_dir, "--quiet")
    assert code == 130 and err.strip() == f"manualnet: interrupted; resume with: manualnet train --resume {run_dir}"
    code, err = run(capsys, "train", "--resume", run_dir, "--set", "train.epochs=1", "--quiet")
    assert code == 0, err
