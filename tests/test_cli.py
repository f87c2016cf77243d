"""The command line itself: --version, help text, hints for mistyped flags, start-up without torch."""

import importlib
import subprocess
import sys

import pytest
import yaml

import manualnet
from manualnet.cli.main import _parser, main
from tests.helpers import ROOT, run_cli

CONFIG = {"name": "t", "data": {"dataset": "xor"}, "model": [{"type": "Linear", "out_features": 2}]}


def test_version_prints_the_package_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"manualnet {manualnet.__version__}"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["train", "--help"], ["train", "--epochs", "3"]])
def test_help_version_and_argument_errors_do_not_import_torch(args):
    code = ("import sys\nfrom manualnet.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=60)
    assert result.stderr.splitlines()[-1] == "no torch", result.stderr


@pytest.mark.parametrize("args, hint", [
    (["--epochs", "3"], "unrecognized argument --epochs: use --set train.epochs=3"),
    (["--lr=0.05"], "unrecognized argument --lr: use --set optim.lr=0.05"),
    (["--batch-size", "8"], "unrecognized argument --batch-size: use --set train.batch_size=8"),
    (["--seed"], "unrecognized argument --seed: use --set seed=VALUE"),
    (["--configs", "c.yaml"], "unrecognized argument --configs: did you mean --config?"),
    (["--frobnicate"], "unrecognized argument --frobnicate: manualnet train --help lists the options"),
    (["configs/mlp.yaml"], "unrecognized argument configs/mlp.yaml: use --config configs/mlp.yaml"),
    (["--set", "optim.lr", "0.1"], "unrecognized argument 0.1: write --set optim.lr=0.1 (KEY=VALUE, with '=')"),
])
def test_a_flag_that_does_not_exist_gets_a_hint_under_the_command_s_usage(capsys, args, hint):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: manualnet train ") and err.splitlines()[-1] == f"manualnet train: error: {hint}"


def test_a_bad_set_value_is_attributed_to_set_not_to_the_file(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert main(["train", "--config", str(path), "--set", "train.epochs=lots", "--set", "optim.lr=fast"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"manualnet: error: {path}: 2 problems",
        "manualnet: error: --set train.epochs=lots: input should be a valid integer, got 'lots'",
        "manualnet: error: --set optim.lr=fast: input should be a valid number, unable to parse string as a "
        "number, got 'fast'"]
    assert main(["train", "--config", str(path), "--set", "train.epochs=0"]) == 2
    assert capsys.readouterr().err == ("manualnet: error: --set train.epochs=0: input should be greater than or "
                                       "equal to 1, got 0\n")
    assert main(["train", "--config", str(path), "--set", "train.epochs=2", "--set", "train.epochs=0"]) == 2
    assert capsys.readouterr().err.startswith("manualnet: error: --set train.epochs=0: ")  # the one that holds


def test_setting_only_a_components_type_says_that_its_other_keys_stayed(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "optim": {"type": "SGD", "lr": 0.1, "momentum": 0.9}}))
    assert main(["train", "--config", str(path), "--set", "optim.type=Adam"]) == 2
    assert capsys.readouterr().err == (
        "manualnet: error: --set optim.type=Adam: optim.momentum: unknown argument; Adam takes lr, betas, eps, "
        "weight_decay, amsgrad (setting only optim.type keeps optim's other keys: set the whole section to replace "
        "them)\n")
    assert main(["train", "--config", str(path), "--set", "optim={type: Adam}", "--set", "train.epochs=1",
                 "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0


def test_eval_help_documents_run_and_checkpoint_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--run RUN_DIR the run directory" in out and "(default: best)" in out


def test_help_text_is_plain_text(capsys):
    parser, commands = _parser()
    for p in (parser, *commands.values()):
        text = p.format_help()
        assert "``" not in text and "`" not in text, p.prog


def test_every_option_of_every_command_says_what_it_does():
    parser, commands = _parser()
    for p in (parser, *commands.values()):
        for action in p._actions:
            if action.option_strings:
                assert action.help, f"{p.prog} {action.option_strings[0]}"


def test_a_ctrl_c_before_the_run_handles_signals_says_interrupted(monkeypatch, capsys, tmp_path):
    import manualnet.cli.commands

    def interrupted(args):
        raise KeyboardInterrupt  # a plain Ctrl-C: its text is empty

    monkeypatch.setattr(manualnet.cli.commands, "train", interrupted)
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 130
    assert capsys.readouterr().err == "manualnet: interrupted\n"


def test_a_ctrl_c_during_a_commands_import_waits_for_the_import_to_finish(tmp_path, monkeypatch):
    cli_main = importlib.import_module("manualnet.cli.main")  # the module; the package exports its main()
    (tmp_path / "slow_to_import.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nfinished = sum(range(10**6)) > 0\n"
        "def run(args):\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):  # delivered once the import is done, not inside it
        cli_main._imported("slow_to_import", "run")
    assert sys.modules["slow_to_import"].finished
