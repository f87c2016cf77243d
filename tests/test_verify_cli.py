"""manualnet verify through the CLI: configs, user plugins, --layer, --json, --all-layers."""

import json

import yaml

from manualnet.cli import main
from tests.helpers import ROOT, config_path, run_cli

PLUGINS = ROOT / "tests" / "plugins"


def plugin_config(tmp_path, layer, plugin):
    raw = {"name": "v", "plugins": [str(plugin)], "data": {"dataset": "xor"},
           "model": [{"type": "Linear", "out_features": 6}, {"type": layer}, {"type": "Linear", "out_features": 2}],
           "train": {"epochs": 2, "batch_size": 16}, "log": {"tensorboard": False}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_config_verifies_with_finite_differences_and_writes_json(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["verify", "--config", str(config_path("spirals")), "--fd", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PASS: all" in text and "finite-diff" in text and "max rel err" in text
    result = json.loads(out.read_text())
    assert result["passed"] and {r["method"] for r in result["rows"]} == {"autograd", "finite-diff", "accumulate"}
    assert {"index", "layer", "tensor", "shape", "exact", "allclose", "max_abs_diff", "max_rel_err", "tolerance",
            "passed"} <= set(result["rows"][0])


def test_user_layer_from_the_readme_verifies_and_trains(tmp_path, capsys):
    swish = ROOT / "examples" / "swish.yaml"
    assert main(["verify", "--config", str(swish), "--layer", "Swish"]) == 0
    assert "1:Swish" in capsys.readouterr().out
    assert main(["train", "--config", str(swish), "--run-dir", str(tmp_path / "run"), "--quiet",
                 "--set", "train.epochs=1", "--set", "log.tensorboard=false"]) == 0


def test_wrong_user_layer_fails_with_exit_1_naming_it(tmp_path):
    result = run_cli("verify", "--config", plugin_config(tmp_path, "WrongSwish", PLUGINS / "wrong_swish.py"))
    assert result.returncode == 1, result.stderr
    assert "first failure: layer 1 (WrongSwish), tensor dx" in result.stdout
    assert "FAIL" in result.stdout and "Traceback" not in result.stderr


def test_float32_uses_torch_testing_tolerances(capsys):
    assert main(["verify", "--config", str(config_path("regression")), "--dtype", "float32"]) == 0
    assert "allclose(1.3e-06, 1e-05)" in capsys.readouterr().out


def test_unknown_layer_name_is_bad_input(capsys):
    assert main(["verify", "--config", str(config_path("mlp")), "--layer", "Relu"]) == 2
    assert "(did you mean 'ReLU'?)" in capsys.readouterr().err


def test_all_layers_self_test_covers_the_registry(capsys):
    import manualnet

    assert main(["verify", "--all-layers"]) == 0
    out = capsys.readouterr().out
    for name in manualnet.LAYERS.names() + manualnet.LOSSES.names():
        assert name in out, name
    assert "finite-diff" in out and "PASS: all" in out
