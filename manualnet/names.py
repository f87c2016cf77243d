"""The public names of ``manualnet.nn``, listed without importing it (it imports torch): ``import manualnet``
resolves them on first use, and ``manualnet.nn`` exports the same list."""

NN_NAMES = (
    "LAYERS", "LOSSES", "AdaptiveAvgPool2d", "Add", "AvgPool2d", "BCELoss", "BatchNorm1d", "BatchNorm2d", "Conv2d",
    "Dropout2d", "MaxPool2d", "BCEWithLogitsLoss", "Concat", "CrossEntropyLoss", "Dropout", "Flatten",
    "GELU", "GPT", "MLP", "Block", "CausalSelfAttention", "Embedding", "LayerNorm",
    "Identity", "LeakyReLU", "Linear", "LogSoftmax", "Loss", "MSELoss", "MatMul", "Module", "ModuleList",
    "NLLLoss", "Parameter", "ReLU", "Residual", "Sequential", "Sigmoid", "Softmax", "Tanh", "register_layer",
    "register_loss",
)
