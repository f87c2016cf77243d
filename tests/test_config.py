"""Config loading and validation: every problem is one ConfigError line naming the key and what is expected."""

import contextlib
import sys

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manualnet.config.load import apply_override, load_config, validate
from manualnet.errors import ConfigError
from tests.helpers import ROOT

MINIMAL = {"model": [{"type": "Linear", "out_features": 10}]}
# the fuzz tests draw the same examples on every run (CI's verdict does not depend on the draw) and a slow,
# shared machine does not fail them
STABLE = {"derandomize": True, "suppress_health_check": [HealthCheck.too_slow]}


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(raw):
    with pytest.raises(ConfigError) as e:
        validate(raw)
    return str(e.value)


def test_shipped_configs_validate():
    for name in ("mlp", "sigmoid_net", "spirals", "regression", "mnist_mlp"):
        config = load_config(f"configs/{name}.yaml")
        assert config.model and config.train.epochs >= 1


def test_defaults_fill_missing_sections():
    config = validate(MINIMAL)
    assert config.data.dataset == "digits" and config.train.batch_size == 64 and config.optim.type == "SGD"


def test_unknown_key_suggests_closest_name():
    message = problems({**MINIMAL, "train": {"epcohs": 3}})
    assert "train.epcohs: unknown key (did you mean 'epochs'?)" in message


def test_unknown_top_level_key_suggests_closest_name():
    assert "unknown key (did you mean 'model'?)" in problems({**MINIMAL, "modle": []})


def test_wrong_type_names_key_and_value():
    message = problems({**MINIMAL, "train": {"batch_size": "big"}})
    assert "train.batch_size" in message and "'big'" in message and "integer" in message


@pytest.mark.parametrize("section, key, value, expected", [
    ("train", "batch_size", 0, "greater than or equal to 1"),
    ("train", "epochs", -1, "greater than or equal to 1"),
    ("data", "val_fraction", 1.0, "less than 1"),
    ("train", "grad_clip", -1.0, "greater than 0"),
])
def test_out_of_range_values_are_rejected(section, key, value, expected):
    message = problems({**MINIMAL, section: {key: value}})
    assert f"{section}.{key}" in message and expected in message


def test_val_plus_test_fraction_must_leave_training_data():
    assert "val_fraction + test_fraction must be < 1" in problems({**MINIMAL, "data": {"val_fraction": 0.5,
                                                                                         "test_fraction": 0.5}})


def test_out_of_range_component_arguments_are_all_reported_by_the_config_check():
    message = problems({**MINIMAL, "optim": {"type": "SGD", "lr": -1, "momentum": -0.5},
                        "schedule": {"type": "step", "step_size": 0, "gamma": -2},
                        "data": {"val_fraction": 1.0}})
    assert message.splitlines()[1:] == [
        "optim.lr: expected a finite number >= 0, got -1",
        "optim.momentum: expected a finite number >= 0, got -0.5",
        "schedule.step_size: expected an int > 0 (epochs), got 0",
        "schedule.gamma: expected a finite number > 0, got -2",
        "data.val_fraction: expected a fraction >= 0 and less than 1, got 1.0",
    ]


def test_a_value_of_the_wrong_type_is_one_line_not_a_follow_on_about_its_default():
    message = problems({**MINIMAL, "optim": {"type": "SGD", "lr": 0.1, "momentum": "abc", "nesterov": True}})
    assert message == "config: optim.momentum: input should be a valid number, unable to parse string as a number, " \
                      "got 'abc'"                                 # and nothing on nesterov, from momentum's default


@pytest.mark.parametrize("section, example", [("optim", "{type: ..., ...}"), ("data", "{dataset: ..., ...}"),
                                               ("train", "{key: value}")])
def test_a_section_that_is_not_a_mapping_says_what_it_should_be(section, example):
    expected = f"config: {section}: expected a mapping such as {example}, got [1, 2]"
    assert problems({**MINIMAL, section: [1, 2]}) == expected


def test_a_range_is_written_once_in_the_constructor_and_the_config_check_follows_it(monkeypatch):
    from manualnet.optim import SGD
    from manualnet.registry import expect

    at_most_one = classmethod(lambda cls, hyper: expect(hyper, "lr", lambda lr: 0 <= lr <= 1, "a number in [0, 1]"))
    monkeypatch.setattr(SGD, "problems", at_most_one)  # the constructor's range changes; the schema is untouched
    assert "optim.lr: expected a number in [0, 1], got 2" in problems({**MINIMAL, "optim": {"type": "SGD", "lr": 2}})
    with pytest.raises(ConfigError, match=r"^SGD argument lr=2: expected a number in \[0, 1\]$"):
        SGD([torch.zeros(2)], lr=2)


def test_bad_device_is_rejected():
    assert "expected auto, cpu, cuda or cuda:N" in problems({**MINIMAL, "device": "gpu"})


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "two", "Auto", None, 100000])
def test_threads_are_auto_or_a_positive_count(value):
    message = problems({**MINIMAL, "train": {"threads": value}})
    assert "\n" not in message  # one problem: not one for each type the key could have
    assert f"train.threads: expected auto or a number of threads (an integer from 1 to 1024), got {value!r}" \
        in message
    assert validate({**MINIMAL, "train": {"threads": 3}}).train.threads == 3
    assert validate(MINIMAL).train.threads == "auto"


def test_every_problem_is_reported_at_once():
    message = problems({**MINIMAL, "train": {"epcohs": 3, "batch_size": 0}, "seed": "x"})
    assert message.count("\n") >= 3 and "3 problems" in message


def test_the_schemas_and_the_components_problems_are_reported_together():
    message = problems({"train": {"epcohs": 3},
                        "data": {"dataset": "spirals", "n_sample": 10},
                        "model": [{"type": "Linaer", "out_features": 10}, {"type": "ReLU", "inplace": True},
                                  {"type": "Linear"}, {"type": "Dropout", "p": "half"}],
                        "loss": {"type": "CrossEntropyLos"}, "optim": {"type": "SGD", "lrr": 0.1},
                        "schedule": {"type": "step", "warmup": 1}})
    expected = ["train.epcohs: unknown key (did you mean 'epochs'?)",
                "data.n_sample: unknown key for dataset 'spirals' (did you mean 'n_samples'?)",
                "model.0.type: unknown layer 'Linaer' (did you mean 'Linear'?)",
                "model.1.inplace: unknown argument",
                "model.2.out_features: required argument is missing",
                "model.3.p: input should be a valid number",
                "loss.type: unknown loss 'CrossEntropyLos' (did you mean 'CrossEntropyLoss'?)",
                "optim.lrr: unknown argument (did you mean 'lr'?)",
                "schedule.warmup: unknown argument (did you mean 'warmup_epochs'?)",
                "schedule.step_size: required argument is missing"]
    assert f"{len(expected)} problems" in message
    for line in expected:
        assert line in message, line


def test_a_plugins_layer_is_known_when_the_config_is_checked(tmp_path):
    swish = (ROOT / "examples" / "swish.py").read_text().replace('"Swish"', '"ConfigCheckedSwish"')
    (tmp_path / "plugin.py").write_text(swish)  # a name of its own: a registered name belongs to one file
    config = {"plugins": ["plugin.py"],
              "model": [{"type": "ConfigCheckedSwish", "beta": 2.0}, {"type": "Linear", "out_features": 3}]}
    assert load_config(write(tmp_path, yaml.safe_dump(config))).model[0].type == "ConfigCheckedSwish"
    config["model"][0]["betta"] = 1.0
    with pytest.raises(ConfigError, match=r"model\.0\.betta: unknown argument \(did you mean 'beta'\?\)"):
        load_config(write(tmp_path, yaml.safe_dump(config)))
    config["plugins"] = ["missing.py"]
    with pytest.raises(ConfigError, match="plugin file missing.py not found"):
        load_config(write(tmp_path, yaml.safe_dump(config)))


def test_component_checks_go_on_past_a_broken_plugin_and_across_the_data_sections_kinds_of_problem(tmp_path):
    (tmp_path / "raises.py").write_text("raise RuntimeError('boom')\n")
    config = {"plugins": ["raises.py"], "model": [{"type": "ItsLayer"}], "optim": {"type": "SDG"},
              "data": {"dataset": "spirals", "n_samples": "x", "foo": 1}}
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, yaml.safe_dump(config)))
    message = str(e.value)
    assert "raises.py failed to import: RuntimeError: boom" in message
    assert "optim.type: unknown optimizer 'SDG' (did you mean 'SGD'?)" in message
    assert "data.foo: unknown key" in message and "data.n_samples: input should be a valid integer" in message
    assert "ItsLayer" not in message  # the broken plugin may be where it lives: no misleading line
    assert "4 problems" in message


def test_non_finite_arguments_and_a_null_in_features_are_checked_like_the_build_does():
    message = problems({**MINIMAL, "optim": {"type": "SGD", "lr": float("inf")}})
    assert "optim.lr: input should be a finite number" in message
    validate({"model": [{"type": "Linear", "in_features": None, "out_features": 3}]})  # inferred, as in the build


def test_a_plugin_runs_once_per_process_and_any_way_it_fails_is_one_line(tmp_path):
    (tmp_path / "counted.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(tmp_path / 'runs.txt')!r}).open('a').write('ran\\n')\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    config = {"plugins": ["counted.py"], "model": [{"type": "Linear", "out_features": 3}]}
    for _ in range(2):
        load_config(write(tmp_path, yaml.safe_dump(config)))
    assert (tmp_path / "runs.txt").read_text() == "ran\n"
    config["plugins"] = ["exits.py", "x" * 5000]
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, yaml.safe_dump(config)))
    assert "exits.py failed to import: SystemExit: 3" in str(e.value)
    assert "is not a usable file path" in str(e.value)


def test_a_plugins_string_annotations_are_checked(tmp_path):
    (tmp_path / "annotated.py").write_text(
        "from __future__ import annotations\n"
        "import manualnet\n"
        "@manualnet.register_layer('StringAnnotated')\n"
        "class StringAnnotated(manualnet.Identity):\n"
        "    def __init__(self, width: int = 3):\n"
        "        super().__init__()\n")
    config = {"plugins": ["annotated.py"], "model": [{"type": "StringAnnotated", "width": "wide"}]}
    with pytest.raises(ConfigError, match=r"model\.0\.width: input should be a valid integer.*got 'wide'"):
        load_config(write(tmp_path, yaml.safe_dump(config)))


def test_yaml_syntax_error_gives_line_number(tmp_path):
    path = write(tmp_path, "name: x\nmodel: [\n  {type: Linear\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_set_overrides_a_value_parsed_as_yaml(tmp_path):
    path = write(tmp_path, yaml.safe_dump(MINIMAL))
    config = load_config(path, ["optim.lr=0.05", "train.grad_clip=1", "model.0.out_features=7"])
    assert config.optim.lr == 0.05 and config.train.grad_clip == 1.0 and config.model[0].out_features == 7


def test_set_unknown_key_suggests_closest(tmp_path):
    path = write(tmp_path, yaml.safe_dump(MINIMAL))
    with pytest.raises(ConfigError, match=r"unknown key 'epoch' in train \(did you mean 'epochs'\?\)"):
        load_config(path, ["train.epoch=3"])


def test_set_wrong_type_is_a_config_error(tmp_path):
    path = write(tmp_path, yaml.safe_dump(MINIMAL))
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(path, ["train.epochs=many"])


def test_set_without_equals_sign_is_explained():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_override({}, "optim.lr")


def test_set_index_out_of_range_is_explained():
    with pytest.raises(ConfigError, match="has 1 items"):
        apply_override({"model": [{"type": "ReLU"}]}, "model.3.type=ReLU")


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
keys = st.sampled_from(["name", "seed", "device", "dtype", "data", "model", "loss", "optim", "train", "log",
                        "verify", "plugins", "schedule", "epochs", "x"])


@settings(max_examples=150, deadline=None, **STABLE)
@given(st.dictionaries(keys, yaml_values, max_size=6))
def test_fuzzed_configs_raise_only_config_errors(raw):
    with contextlib.suppress(ConfigError):
        validate(raw)


@settings(max_examples=150, deadline=None, **STABLE)
@given(st.text(max_size=40))
def test_fuzzed_yaml_text_raises_only_config_errors(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text)
    with contextlib.suppress(ConfigError):
        load_config(path)


@settings(max_examples=200, deadline=None, **STABLE)
@given(st.text(max_size=30))
def test_fuzzed_set_overrides_raise_only_config_errors(override):
    raw = {"model": [{"type": "Linear", "out_features": 3}], "train": {"epochs": 2}}
    try:
        apply_override(raw, override)
        validate(raw)
    except ConfigError:
        pass


def test_an_optimizer_without_lr_takes_torchs_default_and_no_optim_section_the_configs():
    from manualnet.config.setup import build

    xor = {"model": [{"type": "Linear", "out_features": 2}], "data": {"dataset": "xor"}}
    for optim in ("SGD", "Adam", "AdamW"):
        setup = build(validate({**xor, "optim": {"type": optim}}))
        assert setup.optimizer.lr == getattr(torch.optim, optim)([torch.zeros(1)]).defaults["lr"] == 1e-3
    assert build(validate(xor)).optimizer.lr == 0.1


LAYER_FILE = ("import manualnet\n@manualnet.register_layer('{name}')\nclass {cls}(manualnet.Identity):\n"
              "    pass\n")


def test_a_layer_file_imported_in_python_and_listed_under_plugins_is_one_layer(tmp_path, monkeypatch):
    import importlib

    (tmp_path / "gated.py").write_text(LAYER_FILE.format(name="Gated", cls="Gated"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "gated", raising=False)
    importlib.import_module("gated")  # as `import gated` in a script that then trains a config using it
    config = load_config(write(tmp_path, yaml.safe_dump({"plugins": ["gated.py"], "model": [{"type": "Gated"}]})))
    assert config.model[0].type == "Gated"


def test_two_files_registering_one_name_is_an_error_naming_the_first(tmp_path):
    (tmp_path / "a.py").write_text(LAYER_FILE.format(name="Twice", cls="First"))
    (tmp_path / "b.py").write_text(LAYER_FILE.format(name="Twice", cls="Second"))
    config = {"plugins": ["a.py", "b.py"], "model": [{"type": "Twice"}]}
    with pytest.raises(ConfigError, match=r"b.py failed to import: ValueError: layer name 'Twice' is already "
                                          r"registered to manualnet_plugin_\w+\.First$"):
        load_config(write(tmp_path, yaml.safe_dump(config)))


def test_a_layer_defined_again_in_the_same_module_replaces_itself(tmp_path):
    import manualnet

    for _ in range(2):  # a notebook cell run twice
        @manualnet.register_layer("Redefined")
        class Redefined(manualnet.Identity):
            pass
    assert manualnet.nn.LAYERS.get("Redefined") is Redefined


HINGE = '''import torch
import manualnet


@manualnet.register_loss("MultiHinge")
class MultiHinge(manualnet.Loss):
    """torch's multi_margin_loss: mean over samples of sum_{i != t} max(0, 1 - x_t + x_i) / C."""

    takes_class_indices = True

    def forward(self, pred, target):
        margins = (pred - pred.gather(1, target.unsqueeze(1)) + 1).clamp_min(0).scatter(1, target.unsqueeze(1), 0)
        self.cache = (margins > 0, target, pred.dtype)
        return self.reduce(margins.sum(1) / pred.shape[1])

    def backward(self, dloss=1.0):
        active, target, dtype = self.take_cache()
        d = active.to(dtype)
        d.scatter_(1, target.unsqueeze(1), -d.sum(1, keepdim=True))
        return d * (self.scale(len(target)) * dloss / d.shape[1])

    def reference(self, pred, target):
        return torch.nn.functional.multi_margin_loss(pred, target, reduction=self.reduction)
'''


def test_a_plugin_loss_that_takes_class_indices_gets_them_from_a_config(tmp_path):
    from manualnet.cli.main import main

    (tmp_path / "hinge.py").write_text(HINGE)
    config = {"plugins": ["hinge.py"], "data": {"dataset": "spirals"}, "loss": {"type": "MultiHinge"},
              "model": [{"type": "Linear", "out_features": 16}, {"type": "ReLU"},
                        {"type": "Linear", "out_features": 3}],
              "train": {"epochs": 1}, "log": {"tensorboard": False}}
    path = write(tmp_path, yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["verify", "--config", str(path)]) == 0
