"""What a Python or notebook user reaches for: ``mn.train``, the loss value's ``.backward()`` and the warning
for a Softmax before a loss that does its own."""

import json

import pytest
import torch
import yaml

import manualnet as mn
from manualnet.cli.main import main
from tests.helpers import config_path


def test_train_from_python_returns_the_summary_and_the_run_directory(tmp_path):
    run = mn.train(config_path("regression"), run_dir=tmp_path / "run", quiet=True, train__epochs=2,
                   log__tensorboard=False)
    assert run.run_dir == tmp_path / "run"
    assert run.summary == json.loads((run.run_dir / "summary.json").read_text())
    assert run.summary["epochs"] == 2 and run.summary["test/loss"] > 0
    best = torch.load(run.run_dir / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert not run.model.training and all(torch.equal(v, best[k]) for k, v in run.model.state_dict().items())


def test_train_takes_a_config_dict_and_names_a_mistyped_override(tmp_path):
    config = yaml.safe_load(config_path("regression").read_text())
    run = mn.train(config, run_dir=tmp_path / "run", quiet=True, train__epochs=1, log__tensorboard=False)
    assert run.summary["epochs"] == 1
    with pytest.raises(mn.ConfigError, match=r"train\(\.\.\., train__epochz=\.\.\.\): unknown key 'epochz' in train "
                                             r"\(did you mean 'epochs'\?\)"):
        mn.train(config, train__epochz=1)
    for key, hint in (("epochs", "train__epochs"), ("lr", "optim__lr")):  # a section's key given alone
        with pytest.raises(mn.ConfigError, match=rf"unknown key '{key}' in the top level \(did you mean '{hint}'\?\)"):
            mn.train(config, **{key: 1})
    with pytest.raises(mn.ConfigError, match=r"^train\(\.\.\., optim__lr=\.\.\.\): input should be a valid number"):
        mn.train(config, optim__lr="fast")  # a bad value: named as the override it came from, not as a --set


def test_a_layer_registered_in_the_session_but_not_by_plugins_is_warned_about(tmp_path):
    @mn.register_layer("SessionScale")
    class SessionScale(mn.Identity):
        pass

    config = {"data": {"dataset": "xor"}, "model": [{"type": "Linear", "out_features": 2}, {"type": "SessionScale"}],
              "train": {"epochs": 1}, "log": {"tensorboard": False}}
    with pytest.warns(UserWarning, match=r"^SessionScale registered in this Python session, not by the config's "
                                         r"plugins: `manualnet eval` and `--resume` of this run will not know it"):
        mn.train(config, run_dir=tmp_path / "run", quiet=True)


def test_calling_backward_on_a_loss_value_says_what_to_call():
    loss_fn = mn.CrossEntropyLoss()
    loss = loss_fn(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    assert loss.dim() == 0 and isinstance(loss.item(), float) and type(loss * 2) is torch.Tensor
    assert f"{loss:.3f}" == f"{loss.item():.3f}"
    with pytest.raises(mn.LayerError, match=r"Call dpred = loss_fn.backward\(\), then model.backward\(dpred\)"):
        loss.backward()
    assert loss_fn.backward().shape == (4, 3)   # the hand-written backward is still there to call


def test_a_loss_built_under_autograd_keeps_torchs_backward():
    from manualnet.nn.contract import autograd_through_forward

    pred = torch.randn(4, 3, requires_grad=True)
    with autograd_through_forward():  # as verify differentiates a module's own forward
        loss = mn.CrossEntropyLoss()(pred, torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert pred.grad.shape == (4, 3)


@pytest.mark.parametrize(("loss", "said"), [("CrossEntropyLoss", "applies softmax twice"),
                                             ("NLLLoss", "use LogSoftmax")])
def test_a_softmax_before_a_loss_that_does_its_own_is_a_warning_at_build_time(tmp_path, capsys, loss, said):
    code = main(["train", "--config", str(config_path("mlp")), "--run-dir", str(tmp_path / "run"), "--quiet",
                 "--set", "model=[{type: Linear, out_features: 10}, {type: Softmax}]", "--set", f"loss.type={loss}",
                 "--set", "train.epochs=1", "--set", "log.tensorboard=false"])
    err = capsys.readouterr().err
    assert code == 0
    assert "manualnet: warning: model.1: " in err and said in err


def test_a_plugin_file_also_imported_in_python_is_no_session_layer(tmp_path, monkeypatch):
    import importlib
    import sys
    import warnings

    (tmp_path / "gated.py").write_text("import manualnet\n@manualnet.register_layer('Gated')\n"
                                       "class Gated(manualnet.Identity):\n    pass\n")
    config = {"plugins": [str(tmp_path / "gated.py")], "data": {"dataset": "xor"},
              "model": [{"type": "Linear", "out_features": 2}, {"type": "Gated"}], "train": {"epochs": 1},
              "log": {"tensorboard": False}}
    mn.train(config, run_dir=tmp_path / "first", quiet=True)    # the plugin is loaded
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "gated", raising=False)
    importlib.import_module("gated")                             # and the same file imported: registered again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mn.train(config, run_dir=tmp_path / "second", quiet=True)


def test_train_takes_a_torch_device_and_leaves_no_run_after_bad_input_at_the_first_step(tmp_path):
    config = {"data": {"dataset": "xor"}, "model": [{"type": "Linear", "out_features": 2}], "train": {"epochs": 1},
              "log": {"tensorboard": False}}
    run = mn.train(config, run_dir=tmp_path / "run", quiet=True, device=torch.device("cpu"))
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["device"] == "cpu"
    with pytest.raises(mn.LayerError, match="BCELoss"):
        mn.train({**config, "loss": {"type": "BCELoss"}}, run_dir=tmp_path / "bad", quiet=True)
    assert list((tmp_path / "bad").iterdir()) == []
