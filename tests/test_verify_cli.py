"""manualnet verify through the CLI: configs, user plugins, --layer, --json, --all-layers."""

import json
import math
import re

import pytest
import torch
import yaml

import manualnet as mn
from manualnet.cli.main import main
from manualnet.verify import Row
from manualnet.verify.command import report, verify_model
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


def strict_json(path):
    """The file as JSON, refusing the Infinity and NaN that json.dumps writes unless told not to."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_all_layers_self_test_covers_the_registry_and_skips_what_it_cannot_build(tmp_path, capsys):
    import manualnet

    out = tmp_path / "rows.json"
    assert main(["verify", "--all-layers", "--plugin", str(PLUGINS / "awkward.py"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    labels = {r["layer"] for r in strict_json(out)["rows"]}  # a name, or a description like Linear(5->4)
    for name in manualnet.LAYERS.names() + manualnet.LOSSES.names():
        assert any(label == name or label.startswith(f"{name}(") for label in labels), name
    assert "finite-diff" in text and "non-contiguous input" in text and "reduction=sum" in text
    assert re.fullmatch(r"PASS: all \d+ checks passed; 2 skipped: NeedsScale, ThirteenFeatures", text.splitlines()[-1])
    rows = strict_json(out)["rows"]
    skipped = {r["layer"]: r["note"] for r in rows if r["skipped"]}
    assert skipped == {
        "NeedsScale": "its __init__ needs scale (no default), which the self-test cannot guess: give a default, or "
                      "check it in a model with verify --config",
        "ThirteenFeatures": "its forward refused every input tried (batch 1, widths 5, 1, 2, 3, 4, 6, 8, 10, 16, 32, "
                            "64): ThirteenFeatures: expects 13 input features, gets 5"}
    assert {tuple(r["shape"]) for r in rows if r["layer"] == "TenFeatures"} == {(1, 10), (3, 10)}


def test_losses_are_self_tested_at_batch_1_non_contiguous_and_both_reductions(tmp_path):
    out = tmp_path / "rows.json"
    assert main(["verify", "--all-layers", "--layer", "BCELoss", "--json", str(out)]) == 0
    cases = {(r["tensor"], r["method"], tuple(r["shape"]), r["note"]) for r in strict_json(out)["rows"]}
    expected = set()
    for reduction in ("mean", "sum"):
        for shape, extra in (((1, 5), ""), ((3, 7), ", non-contiguous input")):
            note = f"reduction={reduction}{extra}"
            expected |= {("loss", "autograd", (), note), ("dpred", "autograd", shape, note),
                         ("dpred", "finite-diff", shape, note)}
    assert cases == expected


def test_all_layers_names_the_failing_layer_not_the_whole_model(capsys):
    assert main(["verify", "--all-layers", "--plugin", str(PLUGINS / "wrong_swish.py"), "--layer", "WrongSwish"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "first failure: WrongSwish, tensor dx"
    assert "whole model" not in out


def test_a_forward_that_crashes_everywhere_fails_its_row_and_json_stays_strict(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["verify", "--all-layers", "--plugin", str(PLUGINS / "crashing.py"), "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert text.splitlines()[-1] == "first failure: CrashingForward, tensor y"
    assert "PASS" in text and "ReLU" in text                    # the rest of the self-test ran
    data = strict_json(out)
    crashed = next(r for r in data["rows"] if r["layer"] == "CrashingForward")
    assert crashed["max_abs_diff"] is None and crashed["max_rel_err"] is None
    assert crashed["note"].startswith("forward raised TypeError: unsupported operand type(s) for @")
    assert crashed["note"].endswith("max_abs_diff inf, max_rel_err inf (null in JSON)")
    assert not data["passed"] and data["verdict"].startswith("FAIL: 1 of ")


def test_a_layer_error_from_a_layers_own_backward_fails_it_not_skips_it(capsys):
    plugin = str(PLUGINS / "misshaped_backward.py")
    assert main(["verify", "--all-layers", "--plugin", plugin, "--layer", "MisshapedBackward"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "first failure: MisshapedBackward, tensor dx"
    assert "skipped" not in out and "raised LayerError: ReLU" in out


def test_json_rows_with_nothing_to_compare_are_strict_json(tmp_path, capsys):
    missing = Row(index=0, layer="Linear(3->2)", tensor="dbias", shape=(2,), exact=False, allclose=False,
                  max_abs_diff=math.inf, max_rel_err=math.nan, tolerance="rel err <= 1e-09", passed=False,
                  method="autograd", note="no manual value (None)")
    out = tmp_path / "rows.json"
    assert report([missing], out) == 1
    row = strict_json(out)["rows"][0]
    assert (row["max_abs_diff"], row["max_rel_err"]) == (None, None)
    assert row["note"] == "no manual value (None); max_abs_diff inf, max_rel_err nan (null in JSON)"
    assert "first failure: layer 0 (Linear(3->2)), tensor dbias" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--all-layers", "--config", "configs/mlp.yaml"], "verify --all-layers does not take --config"),
    (["--all-layers", "--dtype", "float32"], "verify --all-layers does not take --dtype float32"),
    (["--all-layers", "--set", "seed=1"], "verify --all-layers does not take --set"),
    (["--all-layers", "--device", "cpu"], "verify --all-layers does not take --device"),
    (["--all-layers", "--layer", "Relu"], "--layer: unknown layer or loss 'Relu' (did you mean 'ReLU'?)"),
    (["--config", "configs/mlp.yaml", "--plugin", "tests/plugins/wrong_swish.py"],
     "verify --plugin works with --all-layers; with --config, list the file under plugins:"),
    ([], "verify needs --config PATH (a model to check) or --all-layers"),
])
def test_flags_that_do_not_go_together_are_bad_input(args, message, capsys):
    assert main(["verify", *args]) == 2
    assert message in capsys.readouterr().err


def test_all_layers_with_layer_checks_that_one_only(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["verify", "--all-layers", "--layer", "Tanh", "--fd", "--dtype", "float64", "--json", str(out)]) == 0
    rows = strict_json(out)["rows"]
    assert {r["layer"] for r in rows} == {"Tanh"} and len(rows) == 6


def test_every_row_of_a_layer_carries_the_same_label():
    torch.manual_seed(0)
    model = mn.Sequential(mn.Linear(4, 6), mn.ReLU(), mn.Linear(6, 3)).to(dtype=torch.float64)
    x, target = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0])
    rows = verify_model(model, mn.CrossEntropyLoss(), x, target)
    labels = {(r.index, r.method): r.layer for r in rows if r.index in ("0", "2")}
    assert labels == {("0", "autograd"): "Linear(4->6)", ("0", "accumulate"): "Linear(4->6)",
                      ("2", "autograd"): "Linear(6->3)", ("2", "accumulate"): "Linear(6->3)"}

