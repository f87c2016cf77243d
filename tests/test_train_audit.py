"""verify.every / verify.at_start: the training-time gradient audit."""

import textwrap

import pytest
import yaml

from manualnet.cli.main import main
from tests.helpers import metrics

WRONG_SIGN_RELU = textwrap.dedent('''
    import torch
    import manualnet


    @manualnet.register_layer("AuditWrongReLU")
    class AuditWrongReLU(manualnet.Module):
        """ReLU with its backward's sign flipped: the audit must stop the run."""

        def forward(self, x):
            y = torch.relu(x)
            self.cache = y
            return y

        def backward(self, dy):
            y = self.take_cache()
            return -dy * (y > 0)
''')


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """One plugin file for the module: a layer name registers once per process."""
    path = tmp_path_factory.mktemp("plugin") / "wrong_relu.py"
    path.write_text(WRONG_SIGN_RELU)
    return path


def write_run(tmp_path, plugin, layer, **verify):
    raw = {"name": "audit", "plugins": [str(plugin)],
           "data": {"dataset": "xor", "val_fraction": 0.2, "test_fraction": 0.2},
           "model": [{"type": "Linear", "out_features": 8}, {"type": layer}, {"type": "Linear", "out_features": 2}],
           "train": {"epochs": 2, "batch_size": 32}, "log": {"tensorboard": False}, "verify": verify}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_audit_logs_worst_relative_error_per_layer(tmp_path, plugin):
    config = write_run(tmp_path, plugin, "ReLU", every=3, at_start=True)
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    audits = [m for m in metrics(run_dir) if "verify/1.ReLU" in m]
    assert audits[0]["step"] == 0 and len(audits) >= 3
    assert all(m["verify/0.Linear"] <= 1e-9 and m["verify/2.Linear"] <= 1e-9 for m in audits)


def test_audit_stops_a_run_whose_backward_is_wrong(tmp_path, plugin, capsys):
    config = write_run(tmp_path, plugin, "AuditWrongReLU", every=5)
    code = main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "gradient audit failed at step 5" in err and "AuditWrongReLU" in err and "FAIL" in err


def test_audit_at_start_stops_before_the_first_step(tmp_path, plugin, capsys):
    config = write_run(tmp_path, plugin, "AuditWrongReLU", at_start=True)
    code = main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert code == 1 and "gradient audit failed at step 1" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
