"""What each CLI subcommand does, given its parsed arguments."""

import sys
from pathlib import Path

from manualnet import checkpoint
from manualnet.assembly import build
from manualnet.checkpoint import clean_stale_files
from manualnet.config import load_config
from manualnet.distributed import RankFailed, cluster_for
from manualnet.divergence import Diverged
from manualnet.errors import CheckpointError, ConfigError
from manualnet.evaluate import evaluate
from manualnet.progress import summary_table
from manualnet.run_dir import new_run_dir
from manualnet.trainer import AuditFailed, Interrupted, Trainer


def train(args):
    config, state, run_dir, base_dir = _inputs(args)
    if state is not None and _finished(state, config, run_dir):
        print(f"manualnet: {run_dir} has already trained its {config.train.epochs} epochs: nothing to do (to train "
              f"more, resume with --set train.epochs=N, N > {config.train.epochs})", file=sys.stderr)
        return 0
    setup = build(config, device=args.device, base_dir=base_dir)
    try:
        with cluster_for(setup.device, config.train.dist_timeout_s, config.seed) as cluster:
            run_dir = run_dir or _shared_run_dir(cluster, config.name, args.run_dir)
            if cluster.is_main and not args.quiet:
                print(f"run directory: {run_dir}", file=sys.stderr)
            trainer = Trainer(setup, run_dir, quiet=args.quiet, resume=state, cluster=cluster)
            if cluster.is_main and state is not None:
                print(f"resumed from {_where(state)}", file=sys.stderr)
            cluster.broadcast_tensors(setup.optimizer.param_buffers())  # one model: rank 0's weights everywhere
            return _fit(trainer, run_dir, args.quiet)
    except RankFailed as e:
        print(f"manualnet: error: {e}", file=sys.stderr)
        return 1


def _inputs(args):
    """(config, checkpoint state or None, run directory or None for a new one, directory for relative paths)."""
    if args.resume:
        if args.config:
            raise ConfigError(f"--resume {args.resume} goes on with the run's own config.yaml; --config cannot be "
                              "combined with it (change a value with --set KEY=VALUE)")
        run_dir = Path(args.resume)
        state = _resume_state(run_dir)
        clean_stale_files(run_dir / "checkpoints")
        config = load_config(run_dir / "config.yaml", args.set)
        return config, state, run_dir, run_dir
    if not args.config:
        raise ConfigError("train needs --config PATH (or --resume RUN_DIR)")
    return load_config(args.config, args.set), None, None, Path(args.config).parent


def _shared_run_dir(cluster, name, explicit):
    """Rank 0 creates the run directory; every rank gets its path, or rank 0's error about it."""
    made = None
    if cluster.is_main:
        try:
            made = ("path", str(new_run_dir(name, explicit=explicit)))
        except (ConfigError, OSError) as e:
            made = ("error", str(e))
    kind, text = cluster.broadcast(made)
    if kind == "error":
        raise ConfigError(text)
    return Path(text)


def _fit(trainer, run_dir, quiet):
    cluster = trainer.cluster
    who = f"rank {cluster.rank}: " if cluster.world_size > 1 else ""  # each rank reports what it saw
    try:
        summary = trainer.fit()
    except Diverged as e:
        last = run_dir / "checkpoints" / "last.pt"
        kept = (f"the last good checkpoint is kept: {last}" if last.exists()
                else "it diverged before the first checkpoint, so none was written")
        print(f"manualnet: {who}{e}; {kept}", file=sys.stderr)
        return 1
    except AuditFailed as e:
        print(f"manualnet: {who}{e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        if cluster.is_main:  # every rank stopped at the same step; rank 0 saved it
            print(f"manualnet: {e}", file=sys.stderr)
        return e.exit_code
    except RankFailed:
        trainer.writer.flush()  # a checkpoint being written is whole on disk before we exit
        raise
    if cluster.is_main:
        print(summary_table(summary))
        print(f"run directory: {run_dir}")
        if trainer.cfg.log.tensorboard:
            print(f"tensorboard --logdir {run_dir}")
    return 0


def _finished(state, config, run_dir):
    """Whether the checkpoint ends the run and the run's summary was written (so resuming has nothing to do)."""
    return (state.get("epoch") == config.train.epochs and state.get("batch") == 0
            and (run_dir / "summary.json").is_file())


def _where(state):
    """Where a checkpoint stands, in the progress lines' terms: ``the end of epoch 3 (step 60)``."""
    epoch, batch, step = state["epoch"], state["batch"], state["step"]
    if batch == 0:
        return f"the end of epoch {epoch} (step {step})" if epoch else "the start (step 0)"
    return f"epoch {epoch + 1}, after its batch {batch} (step {step})"


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
