"""What a run keeps on disk: ``last.pt`` when due, ``best.pt`` with the best epoch's weights, and every write
whole before the run stops; restoring a run from its last checkpoint."""

import dataclasses
import math
import time
import warnings

from manualnet.errors import CheckpointError, Diverged, ManualnetError
from manualnet.training import checkpoint
from manualnet.training.distributed import restore_rng
from manualnet.training.divergence import diagnose_parameters

FORMAT = 1


@dataclasses.dataclass
class Position:
    """Where a run stands: epochs completed, batches of the current epoch done, optimizer steps done."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


@dataclasses.dataclass
class Best:
    """The best epoch so far by validation loss (by train loss when there is no val split: ``metric`` says)."""

    score: float = math.inf
    epoch: int = -1
    step: int | None = None
    metric: str = "val/loss"

    def as_dict(self):  # the checkpoint's "best" entry: the score under its metric's name, as the logs name it
        return {self.metric: self.score, "epoch": self.epoch, "step": self.step}

    @classmethod
    def from_dict(cls, saved):
        metric = "train/loss" if "train/loss" in saved else "val/loss"
        return cls(saved[metric], saved["epoch"], saved.get("step"), metric)


class CheckpointKeeper:
    """Writes a trainer's checkpoints (on the writer thread, atomically) and restores one."""

    def __init__(self, trainer):
        self.t = trainer
        self.writer = checkpoint.Writer()
        self.best = Best()
        self._best_weights = None  # the best epoch's weights, while best.pt does not hold them yet
        self._saved_at = -math.inf  # when the last checkpoint was written (time.perf_counter)

    def improved(self, metrics):
        """Record the epoch just ended as the best if its ``metrics``' val/loss (train/loss, without a val split)
        beats the best so far."""
        t, metric = self.t, "val/loss" if "val/loss" in metrics else "train/loss"
        score = metrics[metric]
        if score >= self.best.score:
            return
        self.best = Best(score, t.at.epoch, t.at.step, metric)
        if t.cluster.is_main:  # the weights best.pt will hold, kept until a checkpoint writes them
            self._best_weights = {k: v.clone() for k, v in t.model.state_dict().items()}

    def due(self):
        """A checkpoint every checkpoint_every epochs, but not more often than every checkpoint_interval_s
        seconds (epochs of milliseconds would spend more time saving than training); always the first epoch
        this process trains (a run has a checkpoint from its first epoch on) and the last. Rank 0's clock
        decides."""
        t, train = self.t, self.t.cfg.train
        waited = time.perf_counter() - self._saved_at >= train.checkpoint_interval_s
        due = self._saved_at == -math.inf or (t.at.epoch % train.checkpoint_every == 0 and waited)
        return t.cluster.broadcast(due) or t.at.epoch == train.epochs

    def save(self):
        """Checkpoint the run as ``checkpoints/last.pt``; write the best epoch's weights to ``best.pt`` if
        they are not there yet (the same file as last.pt, hard-linked, when this is the best epoch)."""
        t = self.t
        self.check_weights()
        rngs = t.cluster.gather(checkpoint.rng_state())  # every rank's: Dropout masks differ by rank
        self._saved_at = time.perf_counter()
        if not t.cluster.is_main:
            return
        t.log.flush()  # metrics.jsonl and the event file hold all up to the checkpoint (after it: resumed)
        state = {"model": t.model.state_dict(), "optim": t.optimizer.state_dict(), "schedule": t.schedule.state_dict(),
                 **dataclasses.asdict(t.at), "rng": rngs[0], "rng_ranks": rngs[1:], "config": t.cfg.to_dict(),
                 "best": self.best.as_dict(), "running": t.running.state_dict(), "format": FORMAT,
                 "elapsed_s": t.elapsed(), "last_metrics": dict(t.last_metrics), "threads": t.threads}
        folder = t.run_dir / "checkpoints"
        best_now = self._best_weights is not None and self.best.step == t.at.step
        if self._best_weights is not None and not best_now:  # best.pt is written next: a kill in between
            state["best_model"] = self._best_weights          # must not lose the best epoch's weights
        self.writer.submit(state, [folder / "last.pt", *([folder / "best.pt"] if best_now else [])])
        self._best_weights = None if best_now else self._best_weights
        self.save_best()

    def save_best(self):
        """Write the best epoch's weights to ``best.pt``, if a checkpoint has not written them yet."""
        if self._best_weights is None:
            return
        state = {"model": self._best_weights, "epoch": self.best.epoch, "step": self.best.step,
                 "best": self.best.as_dict(), "config": self.t.cfg.to_dict(), "format": FORMAT}
        self.writer.submit(state, [self.t.run_dir / "checkpoints" / "best.pt"])
        self._best_weights = None

    def check_weights(self):
        """Stop the run if an update made a weight non-finite (a non-finite gradient under a finite loss, on a
        step that computed no gradient norm): before such weights could be copied or checkpointed."""
        t = self.t
        if not all(math.isfinite(p.sum().item()) for p in t.optimizer.param_buffers()):  # NaN or inf: one sum
            self.stop_cleanly()
            raise Diverged(f"training diverged by step {t.at.step}: {diagnose_parameters(t.model)}; it is not "
                           "checkpointed. Lower optim.lr or set train.grad_clip")

    def stop_cleanly(self):
        """Before the run stops on an error: the best weights on disk, every checkpoint write complete."""
        self.save_best()
        self.writer.flush()

    def restore(self, state):
        """Put the trainer where the checkpoint ``state`` left the run; a CheckpointError if it does not fit."""
        t = self.t
        try:
            t.model.load_state_dict(state["model"])
            t.optimizer.load_state_dict(state["optim"])
            t.schedule.load_state_dict(state["schedule"])
            t.at = Position(state["epoch"], state["batch"], state["step"])
            saved_batch_size = state["config"]["train"]["batch_size"]
            t.elapsed_before = state.get("elapsed_s", 0.0)
            t.last_metrics = dict(state.get("last_metrics", {}))
            self.best = Best.from_dict(state["best"])
            t.running.load_state_dict(state["running"])
            restore_rng(state, t.cluster.rank, t.cfg.seed)
            if t.cfg.train.threads == "auto" and state.get("threads") and t.threads is not None:
                t.threads = state["threads"]  # the count the run chose: another sums in another order
        except ManualnetError as e:
            raise CheckpointError(f"checkpoint does not fit this run: {e}") from None
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint is missing or has a malformed entry: {e}") from None
        _check_fits(t.at, saved_batch_size, t.cfg.train)  # the run's settings, not the checkpoint, say why
        # a kill between writing last.pt (``state``, resumed from) and best.pt: best.pt is made what it should be
        last, best = t.run_dir / "checkpoints" / "last.pt", t.run_dir / "checkpoints" / "best.pt"
        if t.cluster.is_main and self.best.step == t.at.step and last.is_file() and \
                not (best.exists() and best.samefile(last)):
            checkpoint.link(last, best)
        elif t.cluster.is_main and "best_model" in state:
            self._best_weights = state["best_model"]
            self.save_best()
            self.writer.flush()
        elif t.cluster.is_main and self.best.epoch >= 0 and not best.is_file():  # deleted: its weights are gone
            warnings.warn(f"{best} is missing: the best epoch's weights ({self.best.epoch}) are lost; the best is "
                          "chosen again from the epochs still to come", UserWarning, stacklevel=2)
            self.best = Best()


def _check_fits(at, saved_batch_size, train):
    if at.batch and saved_batch_size != train.batch_size:  # the epoch's order is cut in batches
        raise CheckpointError(f"the checkpoint is {at.batch} batches into epoch {at.epoch + 1}, with "
                              f"train.batch_size = {saved_batch_size}; it cannot go on with {train.batch_size} "
                              f"mid-epoch (resume with batch size {saved_batch_size} and change it once the epoch "
                              "is done)")
    if at.batch and at.epoch >= train.epochs:  # its epoch is begun: it cannot end before the epoch does
        raise CheckpointError(f"the checkpoint is {at.batch} batches into epoch {at.epoch + 1}; train.epochs = "
                              f"{train.epochs} would end the run before it; resume with train.epochs >= {at.epoch + 1}")
    if at.epoch > train.epochs:
        raise CheckpointError(f"the run has already trained {at.epoch} epochs, more than train.epochs = "
                              f"{train.epochs}; to train more, resume with --set train.epochs=N, N > {at.epoch}")
