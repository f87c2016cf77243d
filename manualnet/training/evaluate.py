"""Loss and accuracy of a model on a whole split, without caches or gradients."""

import math

import torch

from manualnet.errors import DataError


def right_predictions(pred, labels, threshold=0.5):
    """Whether each prediction names the right class (bool, shaped like ``labels``): the argmax, or for a
    single output of a binary task, pred > threshold (0.5 for probabilities, 0 for logits)."""
    predicted = (pred[:, 0] > threshold) if pred.shape[-1] == 1 else pred.argmax(-1)
    if predicted.shape != labels.shape:  # == would broadcast them into a wrong count
        raise DataError(f"accuracy: labels of shape {tuple(labels.shape)} for predictions of shape "
                        f"{tuple(pred.shape)}; expected labels of shape {tuple(predicted.shape)}")
    return predicted == labels


def count_right(right):
    """How many of ``right_predictions``' flags are right, a 0-d tensor; for a sequence of predictions (flags
    (N, T)) a sample counts as the fraction of its positions that are right."""
    return right.sum() if right.dim() == 1 else right.flatten(1).double().mean(1).sum()


def accuracy_count(pred, labels, threshold=0.5):
    """How many of ``pred``'s predictions name the right class (see ``right_predictions``, ``count_right``)."""
    return count_right(right_predictions(pred, labels, threshold))


def evaluate(model, loss, x, targets, labels, classification, threshold=0.5, batch_size=4096, perplexity=False):
    """{"loss": mean loss, "accuracy": fraction correct (classification only), "perplexity": e^loss (with
    ``perplexity``: a language model's loss is nats per token)} over all of x."""
    if len(x) == 0:
        return {}
    total, correct = torch.zeros((), dtype=torch.float64, device=x.device), 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb, tb = x[start:start + batch_size], targets[start:start + batch_size]
            pred = model.forward(xb)
            total += loss.forward(pred, tb).double() * (len(xb) if loss.reduction == "mean" else 1)
            if classification:
                correct += accuracy_count(pred, labels[start:start + batch_size], threshold)
    metrics = {"loss": total.item() / (len(x) if loss.reduction == "mean" else 1)}
    if classification:
        metrics["accuracy"] = float(correct) / len(x)
    if perplexity:
        metrics["perplexity"] = math.inf if metrics["loss"] > 700 else math.exp(metrics["loss"])  # (exp overflows)
    return metrics
