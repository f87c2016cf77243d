"""What each CLI subcommand does, given its parsed arguments."""

import sys
from pathlib import Path

import torch

from manualnet import checkpoint
from manualnet.assembly import build
from manualnet.config import load_config
from manualnet.distributed import cluster_for
from manualnet.divergence import Diverged
from manualnet.errors import CheckpointError, ConfigError
from manualnet.evaluate import evaluate
from manualnet.progress import summary_table
from manualnet.run_dir import new_run_dir
from manualnet.trainer import AuditFailed, Interrupted, Trainer


def train(args):
    if args.resume:
        run_dir = Path(args.resume)
        state = _resume_state(run_dir)
        config = load_config(run_dir / "config.yaml", args.set)
        base_dir = Path(args.config).parent if args.config else run_dir
    else:
        if not args.config:
            raise ConfigError("train needs --config PATH (or --resume RUN_DIR)")
        config = load_config(args.config, args.set)
        base_dir, state = Path(args.config).parent, None
    setup = build(config, device=args.device, base_dir=base_dir)
    cluster = cluster_for(setup.device, config.train.dist_timeout_s)
    try:
        if not args.resume:
            run_dir = Path(cluster.broadcast(str(new_run_dir(config.name, explicit=args.run_dir))
                                             if cluster.is_main else None))
        if cluster.is_main and not args.quiet:
            print(f"run directory: {run_dir}", file=sys.stderr)
        return _fit(Trainer(setup, run_dir, quiet=args.quiet, resume=state, cluster=cluster), run_dir, args.quiet)
    finally:
        cluster.close()


def _fit(trainer, run_dir, quiet):
    rank = trainer.cluster.rank
    try:
        summary = trainer.fit()
    except Diverged as e:
        last = run_dir / "checkpoints" / "last.pt"
        kept = (f"the last good checkpoint is kept: {last}" if last.exists()
                else "it diverged before the first checkpoint, so none was written")
        print(f"manualnet: {e}; {kept}", file=sys.stderr)
        return 1
    except AuditFailed as e:
        print(f"manualnet: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"manualnet: {e}", file=sys.stderr)
        return e.exit_code
    except torch.distributed.DistError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"manualnet: error: rank {rank}: a collective failed, so another rank died or hung: {first}",
              file=sys.stderr)
        return 1
    if trainer.cluster.is_main and not quiet:
        print(summary_table(summary))
    return 0


def _resume_state(run_dir):
    if not run_dir.is_dir():
        raise CheckpointError(f"--resume {run_dir}: no such run directory")
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"--resume {run_dir}: not a run directory (no config.yaml)")
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise CheckpointError(f"--resume {run_dir}: no checkpoint to resume from ({last} does not exist)")
    return checkpoint.load(last)


def evaluate_run(args):
    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"--run {run_dir}: not a run directory (no config.yaml)")
    config = load_config(run_dir / "config.yaml")
    setup = build(config, device=args.device, base_dir=run_dir)
    state = checkpoint.load(run_dir / "checkpoints" / f"{args.checkpoint}.pt")
    try:
        setup.model.load_state_dict(state["model"])
    except Exception as e:
        raise CheckpointError(f"{args.checkpoint}.pt does not fit the run's model: {e}") from None
    setup.model.eval()
    results = {"checkpoint": args.checkpoint, "epoch": state.get("epoch")}
    for split in ("val", "test"):
        x, targets, labels = setup.split(split)
        metrics = evaluate(setup.model, setup.loss, x, targets, labels, setup.classification, setup.threshold)
        results.update({f"{split}/{k}": v for k, v in metrics.items()})
    print(summary_table(results))
    return 0
