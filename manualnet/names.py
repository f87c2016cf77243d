"""Names shared across layers of the package, kept free of torch: the public names of ``manualnet.nn``,
listed without importing it (``import manualnet`` resolves them on first use, and ``manualnet.nn`` exports
the same list), and the data section's common keys, which the config schema (imported by the CLI before
torch) and the data loaders share."""

NN_NAMES = (
    "LAYERS", "LOSSES", "AdaptiveAvgPool2d", "Add", "AvgPool2d", "BCELoss", "BatchNorm1d", "BatchNorm2d", "Conv2d",
    "Dropout2d", "MaxPool2d", "BCEWithLogitsLoss", "Concat", "CrossEntropyLoss", "Dropout", "Flatten",
    "GELU", "GPT", "MLP", "Block", "CausalSelfAttention", "Embedding", "LayerNorm",
    "Identity", "LeakyReLU", "Linear", "LogSoftmax", "Loss", "MSELoss", "MatMul", "Module", "ModuleList",
    "NLLLoss", "Parameter", "ReLU", "Residual", "Sequential", "Sigmoid", "Softmax", "Tanh", "register_layer",
    "register_loss",
)

# The keys of the config's data section that every data set has, and their defaults; the rest are the loader's.
COMMON_KEYS = {"dataset": "digits", "val_fraction": 0.1, "test_fraction": 0.2, "standardize": True}
