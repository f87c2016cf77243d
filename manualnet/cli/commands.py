"""What each CLI subcommand does, given its parsed arguments."""

import contextlib
import copy
import os
import signal
import sys
from pathlib import Path

from manualnet.config.load import apply_override, load_config, read_yaml, validate
from manualnet.config.schema import Config
from manualnet.config.setup import build
from manualnet.data.base import data_arguments
from manualnet.data.text import check_vocabulary
from manualnet.errors import (
    AuditFailed,
    CheckpointError,
    ConfigError,
    Diverged,
    Interrupted,
    ManualnetError,
    RankFailed,
    RunDirError,
)
from manualnet.files import storage_error
from manualnet.log.progress import summary_table
from manualnet.training import checkpoint
from manualnet.training.checkpoint import clean_stale_files
from manualnet.training.distributed import cluster_for
from manualnet.training.evaluate import evaluate
from manualnet.training.heap import keep_freed_memory
from manualnet.training.run_dir import RunLock, clear, discard_if_unlogged, never_trained, new_run_dir
from manualnet.training.trainer import Trainer


def train(args):
    if hasattr(signal, "SIGXFSZ"):  # past `ulimit -f` a write then fails with EFBIG, reported, not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with _resume_lock(args.resume):
        config, state, resume_dir, base_dir = _inputs(args)
        if state is not None and _finished(state, config, resume_dir):
            print(f"manualnet: {resume_dir} has already trained its {config.train.epochs} epochs: nothing to do (to "
                  f"train more, resume with --set train.epochs=N, N > {config.train.epochs})", file=sys.stderr)
            return 0
        setup, run_dir = build(config, device=args.device, base_dir=base_dir), None
        try:
            with cluster_for(setup.device, config.train.dist_timeout_s, config.seed) as cluster, \
                    _claimed_run_dir(cluster, config.name, args.run_dir, resume_dir) as run_dir:
                if resume_dir is not None and state is None and cluster.is_main:
                    print(f"manualnet: {run_dir} has no checkpoint (it stopped before the end of its first "
                          "epoch): training it from the start with its config.yaml", file=sys.stderr)
                    clear(run_dir, keep=("config.yaml",))  # (never_trained: nothing but the run's own files)
                try:
                    trainer = Trainer(setup, run_dir, quiet=args.quiet, resume=state, cluster=cluster)
                except OSError as e:  # metrics.jsonl or the event file cannot be opened for appending
                    raise storage_error(e) from None
                if cluster.is_main and not args.quiet:
                    print(f"run directory: {run_dir}", file=sys.stderr)
                if cluster.is_main and state is not None and not args.quiet:
                    print(f"resumed from {_where(state)}", file=sys.stderr)
                cluster.broadcast_tensors(setup.optimizer.param_buffers())  # one model: rank 0's weights everywhere
                keep_freed_memory()  # from now on what a step frees serves the next step (training/heap.py)
                return _fit(trainer, run_dir, args.quiet)
        except KeyboardInterrupt as e:  # a Ctrl-C before the loop handles signals: the run can still go on
            if type(e) is KeyboardInterrupt and run_dir is not None and (run_dir / "config.yaml").is_file():
                raise KeyboardInterrupt(f"interrupted; resume with: manualnet train --resume {run_dir}") from None
            raise
        except RankFailed as e:
            print(f"manualnet: error: {e}", file=sys.stderr)
            return 1


@contextlib.contextmanager
def _resume_lock(resume):
    """Hold the lock of the run directory ``resume`` (a path, or None for a new run) while the block runs:
    taken before its checkpoint and config are read, so a resume never reads what another process is
    about to replace. Only rank 0 of a torchrun launch (or a plain process) takes it."""
    if not resume or not Path(resume).is_dir() or os.environ.get("RANK", "0") != "0":
        yield
        return
    with RunLock(resume):
        clean_stale_files(Path(resume) / "checkpoints")  # only now: a running process's are not stale
        yield


def _inputs(args):
    """(config, checkpoint state or None, run directory or None for a new one, directory for relative paths)."""
    if args.resume:
        if args.config:
            raise ConfigError(f"--resume {args.resume} goes on with the run's own config.yaml; --config cannot be "
                              "combined with it (change a value with --set KEY=VALUE)")
        if args.run_dir and Path(args.run_dir).resolve() != Path(args.resume).resolve():
            raise ConfigError(f"--resume {args.resume} trains in that directory; --run-dir {args.run_dir} cannot be "
                              "combined with it (copy the run directory first to branch off a copy)")
        run_dir = Path(args.resume)
        state = _resume_state(run_dir)
        return _run_config(run_dir, state, args.set), state, run_dir, run_dir
    if not args.config:
        raise ConfigError("train needs --config PATH (or --resume RUN_DIR)")
    return load_config(args.config, args.set), None, None, Path(args.config).parent


@contextlib.contextmanager
def _claimed_run_dir(cluster, name, explicit, resume_dir):
    """The resumed directory (locked already: ``_resume_lock``), or a new one that rank 0 creates and holds
    the lock of while the block runs, before anything is written there; every rank gets its path, or rank
    0's error about it."""
    if resume_dir is not None:
        yield resume_dir
        return
    lock, made = None, None
    if cluster.is_main:
        try:
            lock = new_run_dir(name, explicit=explicit)
            made = ("path", str(lock.path))
        except (ManualnetError, OSError) as e:
            made = ("error", str(e))
    kind, text = cluster.broadcast(made)
    if kind == "error":
        raise RunDirError(text)
    try:
        yield Path(text)
    except ManualnetError as e:
        if lock is not None and e.exit_code == 2:  # bad input: a run that logged nothing leaves nothing
            discard_if_unlogged(lock.path, whole=explicit is None)
        raise
    finally:
        if lock is not None:
            lock.release()


def _fit(trainer, run_dir, quiet):
    cluster = trainer.cluster
    who = f"rank {cluster.rank}: " if cluster.world_size > 1 else ""  # each rank reports what it saw
    try:
        summary = trainer.fit()
    except Diverged as e:
        last = run_dir / "checkpoints" / "last.pt"
        kept = (f"the last good checkpoint is kept: {last}" if last.exists()
                else f"it diverged before the first checkpoint, so none was written (its logs: {run_dir})")
        print(f"manualnet: {who}{e}; {kept}", file=sys.stderr)
        return 1
    except AuditFailed as e:
        print(f"manualnet: {who}{e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        _quiet_signals()
        if cluster.is_main:  # every rank stopped at the same step; rank 0 saved it
            print(f"manualnet: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # a second signal (errors.StoppedAtOnce): the CLI reports it
        _quiet_signals()
        raise
    except RankFailed:
        trainer.checkpoints.writer.flush()  # a checkpoint being written is whole on disk before we exit
        raise
    except OSError as e:  # a metrics or event file the run appends to (a checkpoint's says so itself)
        raise storage_error(e) from None
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


def _quiet_signals():
    """The run stopped on a signal and the process is on its way out: another SIGINT or SIGTERM ends it at
    once, with exit code 128 + its number (Python's KeyboardInterrupt, raised in teardown or in an atexit
    hook, printed a traceback)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_at_once)


def _exit_at_once(signum, frame):
    sys.stderr.flush()
    os._exit(128 + signum)


def _resume_state(run_dir):
    """The run's last checkpoint, or None for a run that has none yet (it is trained from the start)."""
    if not run_dir.is_dir():
        what = "not a directory" if run_dir.exists() else "no such run directory"
        raise CheckpointError(f"--resume {run_dir}: {what}")
    last = run_dir / "checkpoints" / "last.pt"
    if not (run_dir / "config.yaml").exists() and not last.exists():
        raise CheckpointError(f"--resume {run_dir}: not a run directory (no config.yaml)")
    if not last.is_file():
        if (run_dir / "config.yaml").is_file() and never_trained(run_dir):  # stopped in its first epoch
            return None
        raise CheckpointError(f"--resume {run_dir}: no checkpoint to resume from ({last} does not exist)")
    return checkpoint.load(last)


def _run_config(run_dir, state, overrides=()):
    """The run's config.yaml with ``overrides``; when config.yaml is missing or unreadable (a kill while an
    older version rewrote it in place), the config the checkpoint ``state`` holds, with a warning."""
    path = run_dir / "config.yaml"
    try:
        raw = read_yaml(path)
    except ConfigError as e:
        saved = state.get("config") if state else None
        if not isinstance(saved, dict):
            raise
        print(f"manualnet: warning: {e}; using the config saved in the checkpoint", file=sys.stderr)
        raw = saved
    before = copy.deepcopy(raw)
    for override in overrides:
        apply_override(raw, override)
    config = validate(raw, source=str(path), base_dir=run_dir, overrides=overrides)
    saved = state.get("config") if state else None  # what the run trained with, whatever config.yaml says now
    trained = {**before, **{k: saved[k] for k in ("seed", "data") if k in saved}} if isinstance(saved, dict) \
        else before  # (an older checkpoint's config may lack a key: config.yaml's then stands for it)
    changed = _data_changes(trained, config) if state is not None else []
    if changed:  # (a run never checkpointed trains from the start: it may change)
        who = "--set " if _data_changes(before, config) else f"{path} (edited since the run's last checkpoint): "
        raise ConfigError(f"{who}{', '.join(changed)}: a resumed run keeps its seed and data, which decide its "
                          "train/val/test split, preprocessing and batch order; train a new run to change them")
    return config


MOVABLE = {"path", "root", "download"}  # where the data set's files are, not what it is


def _data_changes(raw, resumed):
    """``["key=new (was old)", ...]`` for the seed and the data section's keys (but where its files are) that
    the config ``resumed`` changes from the raw config ``raw``: they decide the train/val/test split, the
    preprocessing and the batch order a run trains on. Keys left out count as their defaults."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    run_data, new_data = data_arguments(data), data_arguments(resumed.data.model_dump())
    pairs = [("seed", raw.get("seed", Config.model_fields["seed"].default), resumed.seed)]
    pairs += [(f"data.{k}", run_data.get(k), new_data.get(k)) for k in {*run_data, *new_data} - MOVABLE]
    return [f"{key}={new!r} (was {old!r})" for key, old, new in sorted(pairs, key=lambda p: p[0]) if old != new]


def evaluate_run(args):
    run_dir = Path(args.run)
    path = run_dir / "checkpoints" / f"{args.checkpoint}.pt"
    if not (run_dir / "config.yaml").exists() and not path.exists():
        raise CheckpointError(f"--run {run_dir}: not a run directory (no config.yaml)")
    state = checkpoint.load(path)
    config = _run_config(run_dir, state)
    setup = build(config, device=args.device, base_dir=run_dir)
    if setup.data.inferred_sizes():  # a language model: its text must be the one the run's vocab.json says
        check_vocabulary(run_dir, setup.data.classes)
    try:
        setup.model.load_state_dict(state["model"])
    except Exception as e:
        raise CheckpointError(f"{args.checkpoint}.pt does not fit the run's model: {e}") from None
    setup.model.eval()
    results = {"checkpoint": args.checkpoint, "epoch": state.get("epoch")}
    for split in ("val", "test"):
        x, targets, labels = setup.split(split)
        metrics = evaluate(setup.model, setup.loss, x, targets, labels, setup.classification, setup.threshold,
                           perplexity=bool(setup.data.inferred_sizes()))  # a language model: its perplexity
        results.update({f"{split}/{k}": v for k, v in metrics.items()})
    print(summary_table(results))
    return 0
