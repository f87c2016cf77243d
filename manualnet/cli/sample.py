"""``manualnet sample``: text from a trained language model's checkpoint."""

from pathlib import Path

import torch

from manualnet.config.load import load_config
from manualnet.config.setup import build
from manualnet.data.text import encode, load_vocabulary
from manualnet.errors import CheckpointError, ConfigError, DataError
from manualnet.nn.models.generate import generate
from manualnet.training import checkpoint


def sample_run(args):
    """Print ``--tokens`` characters generated after ``--prompt`` by the run's ``--checkpoint``."""
    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"--run {run_dir}: not a run directory (no config.yaml)")
    if args.tokens < 0:
        raise ConfigError(f"--tokens must be >= 0, got {args.tokens}")
    if args.temperature <= 0:
        raise ConfigError(f"--temperature must be > 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    vocab = load_vocabulary(run_dir)
    prompt = args.prompt if args.prompt else ("\n" if "\n" in vocab else vocab[0])
    unknown = sorted(set(prompt) - set(vocab))
    if unknown:
        raise DataError(f"--prompt: {', '.join(map(repr, unknown))} not in the run's vocabulary of {len(vocab)} "
                        f"characters ({run_dir / 'vocab.json'})")
    setup = build(load_config(run_dir / "config.yaml"), device=args.device, base_dir=run_dir)
    block_size = setup.data.inferred_sizes().get("block_size")
    if block_size is None or setup.data.classes != vocab:
        raise CheckpointError(f"--run {run_dir}: its data is not the text its vocab.json was made from")
    state = checkpoint.load(run_dir / "checkpoints" / f"{args.checkpoint}.pt")
    try:
        setup.model.load_state_dict(state["model"])
    except Exception as e:
        raise CheckpointError(f"{args.checkpoint}.pt does not fit the run's model: {e}") from None
    setup.model.eval()
    idx = encode(prompt, {ch: i for i, ch in enumerate(vocab)}).unsqueeze(0).to(setup.device)
    generator = torch.Generator(setup.device).manual_seed(args.seed)
    out = generate(setup.model, idx, args.tokens, block_size, args.temperature, args.top_k, generator)
    print(prompt + "".join(vocab[i] for i in out[0, idx.shape[1]:].tolist()))
    return 0
