"""Turn the config's ``model`` and ``loss`` sections into a Sequential and a Loss that fit the data."""

import inspect

import torch

from manualnet.config.arguments import construct
from manualnet.errors import ConfigError, ManualnetError
from manualnet.nn import LAYERS, LOSSES, Sequential

DATA_SIZES = ("vocab_size", "block_size")  # a language model's sizes, fixed by its data when a config omits them


def build_model(specs, sample_shape, seed, device="cpu", dtype=torch.float32, probe=None, sizes=None):
    """A Sequential from ``[{type: Name, **kwargs}, ...]`` for samples of ``sample_shape`` (an int: vectors
    of that size), weights drawn after ``torch.manual_seed(seed)``.

    The sizes in ``INFERRED`` (``in_features``, ``in_channels``, ``num_features``) of a layer that takes them
    are inferred from the previous layer's output; a given one that does not match is an error naming the
    layer. An argument that is itself a layer spec, or a list of them (``{type: Residual, block: [...]}``),
    is built the same way, at the input its module gets. A probe batch (in eval mode: BatchNorm's running
    statistics stay untouched) checks that the sizes chain: zeros, or ``probe`` (a few rows of the data: a
    GPT's token ids). ``sizes``: ``{vocab_size, block_size}`` from the data, for a layer that takes them and
    whose spec does not give them.
    """
    torch.manual_seed(seed)
    sample_shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    probe = torch.zeros(2, *sample_shape, device=device, dtype=dtype) if probe is None else probe
    model, probe = _build_chain(specs, probe, "model", device, dtype, sizes or {})
    return model, probe.shape[-1]


def _build_chain(specs, probe, where, device, dtype, sizes):
    layers = []
    for i, spec in enumerate(specs):
        layer, probe = _build_layer(spec, probe, f"{where}.{i}", device, dtype, sizes)
        layers.append(layer)
    return Sequential(*layers), probe


def _build_layer(spec, probe, where, device, dtype, sizes):
    kwargs = spec_kwargs(spec)
    cls = LAYERS.get(spec["type"], where=f"{where}.type")
    for key, value in kwargs.items():
        if is_layer_specs(value):  # a block of layers given inline: built at this layer's input
            kwargs[key] = _build_chain(value if isinstance(value, list) else [value], probe, f"{where}.{key}",
                                       device, dtype, sizes)[0]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs.update({k: v for k, v in sizes.items() if k in accepted and kwargs.get(k) is None})
    unsized = [k for k in DATA_SIZES if k in accepted and accepted[k].default is accepted[k].empty
               and kwargs.get(k) is None]
    if unsized:  # sizes a language model's data fixes, on a data set of feature vectors
        raise ConfigError(f"{where}: {spec['type']} needs {' and '.join(unsized)}, which a text data set gives "
                          "(data: {dataset: text, ...}); this data set gives feature vectors")
    for key in inferred_arguments(cls):
        size = INFERRED[key](probe)
        given = kwargs.get(key)
        if given is not None and given != size:
            what = f"{given} input features, gets {size}" if key == "in_features" else f"{key} {given}, gets {size}"
            raise ConfigError(f"{where}: layer {where[len('model.'):]} ({spec['type']}) expects {what}")
        kwargs[key] = size
    layer = construct(cls, kwargs, where).to(device=device, dtype=dtype)
    try:
        with torch.inference_mode():
            probe = layer.eval().forward(probe)
    except ManualnetError as e:
        raise ConfigError(f"{where}: layer {where[len('model.'):]} ({spec['type']}) cannot take the previous output: "
                          f"{e}") from None
    except (RuntimeError, IndexError, ValueError, TypeError) as e:  # torch refusing an argument a check missed
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{where} ({spec['type']}): cannot run with these arguments on its input of shape "
                          f"{tuple(probe.shape)}: {first}") from None
    return layer.train(), probe


def is_layer_specs(value):
    """Whether a config value is a layer spec (``{type: ...}``) or a non-empty list of them."""
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(isinstance(v, dict) and "type" in v for v in items)


INFERRED = {  # a layer's size argument -> how the builder reads it off the input the layer gets
    "in_features": lambda x: x.shape[-1],
    "in_channels": lambda x: x.shape[1],
    "num_features": lambda x: x.shape[1],
}


def inferred_arguments(cls):
    """Which of ``INFERRED``'s sizes layer class ``cls`` takes (the model builder fills them in)."""
    return [key for key in INFERRED if key in inspect.signature(cls.__init__).parameters]


def wants_images(specs):
    """Whether a model takes samples in their own shape ((C, H, W) images) rather than flattened to vectors:
    its first layer that is sized by its input sizes channels (Conv2d) rather than features (Linear: an MLP,
    as every config before image layers was)."""
    for spec in specs:
        sizes = inferred_arguments(LAYERS.get(spec["type"], where="model.type"))
        if "in_channels" in sizes or "in_features" in sizes:
            return "in_channels" in sizes
    return False


def build_loss(spec, out_features, data):
    """The Loss, checked against the model's output size and the data's targets."""
    name = spec["type"]
    cls = LOSSES.get(name, where="loss.type")
    loss = construct(cls, spec_kwargs(spec), "loss")
    if data.task == "regression":
        if cls.takes_class_indices:
            raise ConfigError(f"loss: {name} needs class labels, but data set {data.name!r} is a regression task "
                              "(use MSELoss)")
        if out_features != data.out_features:
            raise ConfigError(f"loss: the model outputs {out_features} values per sample but data set "
                              f"{data.name!r} has {data.out_features} targets; make the last layer's "
                              f"out_features {data.out_features}")
    elif out_features != data.num_classes and not (out_features == 1 and data.num_classes == 2
                                                   and not cls.takes_class_indices):
        raise ConfigError(f"loss: {name} gets {out_features} outputs per sample but data set {data.name!r} has "
                          f"{data.num_classes} classes; make the last layer's out_features {data.num_classes}")
    return loss


def loss_targets(loss_name, labels, out_features, dtype):
    """What the loss compares predictions with: class indices for a loss that takes them (CrossEntropy,
    NLL, a plugin's with ``takes_class_indices``); for MSE and BCE on a classification task, one-hot rows (or
    a (N, 1) column of 0/1 for a single-output binary model)."""
    if LOSSES.get(loss_name).takes_class_indices or labels.is_floating_point():
        return labels
    if out_features == 1:
        return labels.to(dtype).unsqueeze(1)
    return torch.nn.functional.one_hot(labels, out_features).to(dtype)


def spec_kwargs(spec):
    return {k: v for k, v in dict(spec).items() if k != "type"}
