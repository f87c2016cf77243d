"""The built-in losses; importing this package registers them."""

from manualnet.nn.losses.base import LOSSES, Loss, register_loss
from manualnet.nn.losses.bce import BCELoss, BCEWithLogitsLoss
from manualnet.nn.losses.cross_entropy import CrossEntropyLoss, NLLLoss
from manualnet.nn.losses.mse import MSELoss

__all__ = ["LOSSES", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "Loss", "MSELoss", "NLLLoss",
           "register_loss"]
