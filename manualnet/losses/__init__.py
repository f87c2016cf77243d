"""The built-in losses; importing this package registers them."""

from manualnet.losses.base import LOSSES, Loss, register_loss
from manualnet.losses.bce import BCELoss, BCEWithLogitsLoss
from manualnet.losses.cross_entropy import CrossEntropyLoss, NLLLoss
from manualnet.losses.mse import MSELoss

__all__ = ["LOSSES", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "Loss", "MSELoss", "NLLLoss",
           "register_loss"]
