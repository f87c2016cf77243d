"""``manualnet sample``: text from a trained language model's checkpoint."""

import math
import os
import sys
from pathlib import Path

import torch

from manualnet.config.load import load_config
from manualnet.config.model import build_model
from manualnet.config.plugins import load_plugins
from manualnet.config.setup import resolve_device
from manualnet.data.base import data_arguments
from manualnet.data.text import encode, load_vocabulary
from manualnet.errors import CheckpointError, ConfigError, DataError
from manualnet.nn.models.generate import generate
from manualnet.training import checkpoint

MIN_TEMPERATURE = 1e-3


def sample_run(args):
    """Print ``--tokens`` characters generated after ``--prompt`` by the run's ``--checkpoint``."""
    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"--run {run_dir}: not a run directory (no config.yaml)")
    if args.tokens < 0:
        raise ConfigError(f"--tokens must be >= 0, got {args.tokens}")
    if not MIN_TEMPERATURE <= args.temperature < math.inf:  # nan fails too; below it, logits / T overflow
        raise ConfigError(f"--temperature must be a finite number >= {MIN_TEMPERATURE:g} (for the likeliest "
                          f"character every time, use --top-k 1), got {args.temperature}")
    if not -(2**63) <= args.seed < 2**64:  # as a config's seed: what torch's manual_seed takes
        raise ConfigError(f"--seed must be from -2**63 to 2**64 - 1, got {args.seed}")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    vocab = load_vocabulary(run_dir)
    prompt = args.prompt if args.prompt else ("\n" if "\n" in vocab else vocab[0])
    unknown = sorted(set(prompt) - set(vocab))
    if unknown:
        raise DataError(f"--prompt: {', '.join(map(repr, unknown))} not in the run's vocabulary of {len(vocab)} "
                        f"characters ({run_dir / 'vocab.json'})")
    model, block_size, device = _language_model(run_dir, len(vocab), args.device)
    state = checkpoint.load(run_dir / "checkpoints" / f"{args.checkpoint}.pt")
    try:
        model.load_state_dict(state["model"])
    except Exception as e:
        raise CheckpointError(f"{args.checkpoint}.pt does not fit the run's model: {e}") from None
    model.eval()
    idx = encode(prompt, {ch: i for i, ch in enumerate(vocab)}).unsqueeze(0).to(device)
    generator = torch.Generator(device).manual_seed(args.seed)

    def show(text):  # each character as it is drawn: a long --tokens shows its text from the start
        sys.stdout.write(text)
        sys.stdout.flush()
    try:
        show(prompt)
        generate(model, idx, args.tokens, block_size, args.temperature, args.top_k, generator,
                 on_token=lambda next_id: show(vocab[next_id.item()]))
        show("\n")
    except BrokenPipeError:  # the reader went away (| head): stop drawing, without a traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _language_model(run_dir, vocab_size, device=None):
    """``(model, block_size, device)``: the run's model built from its config.yaml and the size of its
    vocab.json alone, not from its data, which may have moved (or be another Python's standard library)."""
    config = load_config(run_dir / "config.yaml")
    config.plugins = load_plugins(config.plugins, run_dir)
    device = resolve_device(device or config.device)
    block_size = data_arguments(config.data.model_dump()).get("block_size")  # as training converted it
    if not isinstance(block_size, int):
        raise CheckpointError(f"--run {run_dir}: its data set ({config.data.dataset}) has no block_size: not a "
                              "language model's run")
    model, _ = build_model(config.to_dict()["model"], (block_size,), config.seed, device, getattr(torch, config.dtype),
                           probe=torch.zeros(1, block_size, dtype=torch.long, device=device),
                           sizes={"vocab_size": vocab_size, "block_size": block_size})
    return model, block_size, device
