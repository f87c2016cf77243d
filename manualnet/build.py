"""Turn the config's ``model`` and ``loss`` sections into a Sequential and a Loss that fit the data."""

import inspect

import torch

from manualnet.components import construct
from manualnet.errors import ConfigError, ManualnetError
from manualnet.nn import LAYERS, LOSSES, Sequential

CLASS_INDEX_LOSSES = ("CrossEntropyLoss", "NLLLoss")


def build_model(specs, in_features, seed, device="cpu", dtype=torch.float32):
    """A Sequential from ``[{type: Name, **kwargs}, ...]``, weights drawn after ``torch.manual_seed(seed)``.

    ``in_features`` of a layer that takes it is inferred from the previous layer's output; a given one
    that does not match is an error naming the layer. An argument that is itself a layer spec, or a list of
    them (``{type: Residual, block: [...]}``), is built the same way, at the input its module gets. A probe
    batch checks that the sizes chain.
    """
    torch.manual_seed(seed)
    probe = torch.zeros(2, in_features, device=device, dtype=dtype)
    model, probe = _build_chain(specs, probe, "model", device, dtype)
    return model, probe.shape[-1]


def _build_chain(specs, probe, where, device, dtype):
    layers = []
    for i, spec in enumerate(specs):
        layer, probe = _build_layer(spec, probe, f"{where}.{i}", device, dtype)
        layers.append(layer)
    return Sequential(*layers), probe


def _build_layer(spec, probe, where, device, dtype):
    kwargs = spec_kwargs(spec)
    cls = LAYERS.get(spec["type"], where=f"{where}.type")
    for key, value in kwargs.items():
        if is_layer_specs(value):  # a block of layers given inline: built at this layer's input
            kwargs[key] = _build_chain(value if isinstance(value, list) else [value], probe, f"{where}.{key}",
                                       device, dtype)[0]
    features = probe.shape[-1]
    given = kwargs.get("in_features")
    if given is not None and given != features:
        raise ConfigError(f"{where}: {spec['type']} expects {given} input features, gets {features}")
    if takes_in_features(cls):
        kwargs["in_features"] = features
    layer = construct(cls, kwargs, where).to(device=device, dtype=dtype)
    try:
        with torch.inference_mode():
            probe = layer.forward(probe)
    except ManualnetError as e:
        raise ConfigError(f"{where}: {spec['type']} cannot take the previous output: {e}") from None
    return layer, probe


def is_layer_specs(value):
    """Whether a config value is a layer spec (``{type: ...}``) or a non-empty list of them."""
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(isinstance(v, dict) and "type" in v for v in items)


def takes_in_features(cls):
    """Whether layer class ``cls`` takes ``in_features`` (the model builder infers it from the data)."""
    return "in_features" in inspect.signature(cls.__init__).parameters


def build_loss(spec, out_features, data):
    """The Loss, checked against the model's output size and the data's targets."""
    name = spec["type"]
    cls = LOSSES.get(name, where="loss.type")
    loss = construct(cls, spec_kwargs(spec), "loss")
    if data.task == "regression":
        if name in CLASS_INDEX_LOSSES:
            raise ConfigError(f"loss: {name} needs class labels, but data set {data.name!r} is a regression task "
                              "(use MSELoss)")
        if out_features != data.out_features:
            raise ConfigError(f"loss: the model outputs {out_features} values per sample but data set "
                              f"{data.name!r} has {data.out_features} targets; make the last layer's "
                              f"out_features {data.out_features}")
    elif out_features != data.num_classes and not (out_features == 1 and data.num_classes == 2
                                                   and name not in CLASS_INDEX_LOSSES):
        raise ConfigError(f"loss: {name} gets {out_features} outputs per sample but data set {data.name!r} has "
                          f"{data.num_classes} classes; make the last layer's out_features {data.num_classes}")
    return loss


def loss_targets(loss_name, labels, out_features, dtype):
    """What the loss compares predictions with: class indices for CrossEntropy/NLL; for MSE and BCE on a
    classification task, one-hot rows (or a (N, 1) column of 0/1 for a single-output binary model)."""
    if loss_name in CLASS_INDEX_LOSSES or labels.is_floating_point():
        return labels
    if out_features == 1:
        return labels.to(dtype).unsqueeze(1)
    return torch.nn.functional.one_hot(labels, out_features).to(dtype)


def spec_kwargs(spec):
    return {k: v for k, v in dict(spec).items() if k != "type"}
