"""The training loop. ``Trainer(setup, run_dir).fit()`` trains and returns the summary.

Read ``fit``, ``train_epoch`` and ``train_step`` top to bottom for the algorithm (forward, loss, backward,
clip, step); bookkeeping lives in the small helpers under them and in ``metrics`` (running sums), ``keeper``
(checkpoints and resume), ``signals`` (Ctrl-C) and ``audit`` (verify during training).
"""

import contextlib
import dataclasses
import json
import math
import signal
import time

import torch

from manualnet.data import Batches
from manualnet.data.text import check_vocabulary, save_vocabulary
from manualnet.errors import Diverged, Interrupted
from manualnet.files import write_text
from manualnet.log.language_model import log_language_model
from manualnet.log.logger import MetricsLogger
from manualnet.log.progress import Progress
from manualnet.log.telemetry import log_histograms, log_update_ratios, parameters_before, record_outputs
from manualnet.optim import clip_grad_norm, grad_norm
from manualnet.training import checkpoint
from manualnet.training.audit import audit
from manualnet.training.distributed import Single
from manualnet.training.divergence import diagnose
from manualnet.training.evaluate import count_right, evaluate, right_predictions
from manualnet.training.keeper import CheckpointKeeper, Position
from manualnet.training.metrics import RunningMetrics
from manualnet.training.run_dir import write_config
from manualnet.training.signals import StopRequests
from manualnet.training.threads import cpu_threads, torch_threads

__all__ = ["Trainer"]


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """What one step records beyond the algorithm and its loss and accuracy: its scalars, update ratios,
    histograms, an audit."""

    log: bool
    update_ratios: bool
    histograms: bool
    audit: bool
    activations: dict = None  # the layers' outputs, filled by the forward of a step that logs histograms


QUIET_STEP = StepPlan(log=False, update_ratios=False, histograms=False, audit=False)  # most steps


class Trainer:
    """Trains ``setup``'s model into ``run_dir``. ``hooks``: an object with any of the methods ``step_started``,
    ``step_ended``, ``validation_started``, ``validation_ended``, ``loop_ended`` (the benchmark's clock)."""

    def __init__(self, setup, run_dir, quiet=False, resume=None, cluster=None, hooks=None):
        self.s, self.cfg, self.run_dir = setup, setup.config, run_dir
        self.cluster = cluster or Single()
        self.model, self.loss, self.optimizer, self.schedule = setup.model, setup.loss, setup.optimizer, setup.schedule
        x, targets, labels = setup.split("train")
        self.batches = Batches(x, targets, self.cfg.train.batch_size, self.cfg.seed, labels=labels,
                               rank=self.cluster.rank, world_size=self.cluster.world_size)
        rows = math.ceil(self.cfg.train.batch_size / self.cluster.world_size)  # a rank's share of a batch
        self.threads = cpu_threads(self.cfg.train.threads, self.model, rows, setup.device)  # None: torch's
        first = next(iter(self.model.children()), None)
        if hasattr(first, "needs_input_grad"):  # the model's input is data: nothing upstream wants its gradient
            first.needs_input_grad = False
        self.at, self.running, self.checkpoints = Position(), RunningMetrics(), CheckpointKeeper(self)
        self.elapsed_before, self.last_metrics, self.hooks, self._before = 0.0, {}, hooks, None
        main, self.language_model = self.cluster.is_main, bool(setup.data.inferred_sizes())  # LM: token ids in
        if main and self.language_model and resume is not None:  # its text must be the one its embeddings learned
            check_vocabulary(run_dir, setup.data.classes)
        if resume is not None:
            self.checkpoints.restore(resume)
        if main:  # nothing written before here: a refused resume leaves the run as it was
            write_config(run_dir, self.cfg)
            if self.language_model and resume is None:
                save_vocabulary(run_dir, setup.data.classes)
        self.log = MetricsLogger(run_dir if main else None, self.cfg.log.tensorboard,
                                 purge_step=self.at.step if resume else None)
        self.progress = Progress(self.cfg.train.epochs, len(self.batches), self.at.epoch, quiet or not main)
        self.stop, self._stopping = StopRequests(), None  # a signal arrived / the ranks agreed to stop on it
        self.parallel, self.has_val = self.cluster.world_size > 1, len(setup.split("val")[0]) > 0

    def fit(self):
        """Train to ``train.epochs``, then evaluate the best checkpoint on the test split."""
        self._started = time.perf_counter()
        self.running.start_clock()
        try:
            with self.stop, torch_threads(self.threads):
                self.log.text("config", json.dumps(self.cfg.to_dict(), indent=2))
                if self.cfg.verify.at_start and self.at.step == 0:
                    audit(self, *next(iter(self.batches.epoch(0)))[:2])
                with torch.no_grad():  # manual backprop: autograd stays off throughout
                    while self.at.epoch < self.cfg.train.epochs:
                        self.train_epoch()
                        self.end_epoch()
                self.log.flush()  # the training curve on disk before the test pass, which may yet fail
                self._hook("loop_ended")
                self.progress.close()
                summary = self.finish()  # a signal now only lets it finish (twice: aborts)
        except BaseException:  # stopped (a signal, divergence, a failed audit, an error): keep what we have
            with contextlib.suppress(Exception):  # the error that stopped the run is the one to report
                self.checkpoints.stop_cleanly()
            raise
        finally:
            self.log.close()
        if self.stop.arrived is not None and self.cluster.is_main:
            self.progress.message(f"manualnet: {signal.Signals(self.stop.arrived).name} arrived as the run was "
                                  "finishing; it finished")
        return summary

    def train_epoch(self):
        self.model.train()
        self._epoch_started = time.perf_counter()
        self.progress.start_epoch(self.at.epoch + 1, self.at.batch)
        for xb, tb, lb in self.batches.epoch(self.at.epoch, start_batch=self.at.batch, reuse=True):
            self._hook("step_started")
            self.train_step(xb, tb, lb)
            self._hook("step_ended")
            self.at.batch += 1
            if self._stopping is not None:
                self.checkpoints.save()
                self.checkpoints.writer.flush()
                raise Interrupted(self._stopping, self.run_dir)

    def train_step(self, xb, tb, lb):
        """One step of the algorithm, on one batch (this rank's shard of it, in data-parallel training)."""
        step, size = self.at.step + 1, self.batches.global_size(self.at.batch)
        weight = self.cluster.shard_weight(len(xb), size, self.loss.reduction) if self.parallel else 1.0
        plan = self.plan(step)
        pred = record_outputs(self.model, xb, plan.activations) if plan.histograms else self.model(xb)  # forward
        loss = self.loss(pred, tb).item() * weight                                                     # loss
        if not (self.parallel or math.isfinite(loss)):  # before backward: the last step's gradients are
            self.diverged(xb, tb, loss)                 # still there, to tell which layer went non-finite
        self.optimizer.zero_grad()
        self.model.backward(self.loss.backward(weight))                                                # backward
        correct = right_predictions(pred, lb, self.s.threshold) if self.s.classification else None
        loss, correct = self.agree(xb, tb, loss, correct)  # ranks: summed gradients, loss, accuracy, stops
        norm = self.clip(xb, tb, loss, plan.log)                                                       # clip
        if plan.audit:
            audit(self, xb, tb)
        before = self.snapshot(plan)                                                                   # update ratios
        self.optimizer.step()                                                                          # step
        self.schedule.step()
        self.at.step = step
        self.running.add(loss, correct, size)
        self.record(step, plan, norm, before)

    # -- the step's helpers ----------------------------------------------------------------------------

    def plan(self, step):
        """What step ``step`` logs. Histograms and update ratios are only for TensorBoard: without it, no
        step computes them."""
        log, every = step % self.cfg.log.every == 0, self.cfg.log.histograms_every
        tensorboard = self.cfg.log.tensorboard and self.cluster.is_main
        histograms = tensorboard and bool(every) and step % every == 0
        audit = bool(self.cfg.verify.every) and step % self.cfg.verify.every == 0
        if not (log or histograms or audit):
            return QUIET_STEP
        return StepPlan(log, tensorboard and log, histograms, audit, {} if histograms else None)

    def snapshot(self, plan):
        """The parameters before this step's update, when it logs their update ratios (copied into the last
        logging step's copy)."""
        if plan.update_ratios:
            self._before = parameters_before(self.model, into=self._before)
            return self._before
        return None

    def agree(self, xb, tb, loss, correct):
        """The ranks' sum of the gradients, the global batch's mean loss, its count of right predictions and
        the stop requests, so every rank logs the same numbers and stops together; alone, the signal that
        arrived (and the flags of ``right_predictions``, counted later)."""
        signum = self.stop.arrived  # read once: this rank acts on what it adds to the sum
        if self.parallel:
            count = count_right(correct) if correct is not None else 0  # each rank has its shard's flags
            loss, total, signals = self.cluster.reduce(self.optimizer.grad_buffers(), [loss, count, signum is not None])
            correct = total if correct is not None else None
            signum = (signum or signal.SIGTERM) if signals else None  # a rank not asked itself stops as asked
            if not math.isfinite(loss):  # the global loss: every rank stops here together
                self.diverged(xb, tb, loss)
        if signum is not None:
            self._stopping = signum
        return loss, correct

    def clip(self, xb, tb, loss, logging):
        """Clip by the global gradient norm (``train.grad_clip``) and return the norm, when clipping or
        logging needs it (a host sync otherwise saved). A non-finite gradient under a finite loss is caught
        here, or by the next step's loss once the update has spread it, or before a checkpoint."""
        max_norm = self.cfg.train.grad_clip
        if max_norm is None and not logging:
            return None
        grads = self.optimizer.grad_buffers()
        norm = (clip_grad_norm(grads, max_norm) if max_norm is not None else grad_norm(grads)).item()
        if not math.isfinite(norm):  # every rank sees the same summed gradient: all stop
            self.diverged(xb, tb, loss, norm)
        return norm

    def record(self, step, plan, norm, before):
        """The step's scalars, update ratios, histograms and progress."""
        if plan.log:
            metrics = self.running.interval_metrics(self.optimizer.lr, norm)
            self.log.scalars(metrics, step, self.at.epoch + 1)
            self.progress.step(metrics)
            if before is not None:
                log_update_ratios(self.log, before, step)
        elif self.progress.tty:
            self.progress.step()
        if plan.histograms:
            log_histograms(self.log, self.model, plan.activations, step)

    def diverged(self, xb, tb, value, norm=None):
        """Stop the run on a non-finite loss (or gradient norm ``norm``), naming where it first appeared."""
        self.checkpoints.stop_cleanly()
        raise Diverged(diagnose(self.model, self.loss, xb, tb, self.at.step, value, norm))

    # -- epochs and the end of the run ---------------------------------------------------------------

    def end_epoch(self):
        """Validate, log the epoch, remember the best weights, checkpoint when due."""
        epoch, metrics = self.at.epoch + 1, self.running.end_epoch()  # epochs count from 1, as the lines do
        validated = epoch % self.cfg.train.eval_every == 0 or epoch == self.cfg.train.epochs
        if validated:
            metrics.update(self.validate())
            if "val/loss" in metrics and not math.isfinite(metrics["val/loss"]):  # no checkpoint of this model
                self.checkpoints.stop_cleanly()
                raise Diverged(f"training diverged in epoch {epoch}: the validation loss is {metrics['val/loss']:g} "
                               "while the training loss was finite. Lower optim.lr or set train.grad_clip")
        self.checkpoints.check_weights()  # before the best weights are copied or a checkpoint is written
        self.log.scalars(metrics, self.at.step, epoch)
        self.log.tensorboard_scalars({"epoch": epoch}, self.at.step)
        if validated and self.language_model and self.cluster.is_main:
            log_language_model(self.log, self.model, self.s.data, self.at.step, self.cfg.seed)
        if time.perf_counter() - self._epoch_started >= self.log.handoff_s:  # the next chance may be an epoch
            self.log.write_rows()                                                # away: the rows go out now
        self.progress.end_epoch(epoch, metrics)
        self.at.epoch, self.at.batch, self.last_metrics = epoch, 0, metrics
        if validated or not self.has_val:  # by train loss only when there is no val split
            self.checkpoints.improved(metrics)
        if self.checkpoints.due():
            self.checkpoints.save()

    def validate(self):
        self._hook("validation_started")
        x, targets, labels = self.s.split("val")
        self.model.eval()
        result = evaluate(self.model, self.loss, x, targets, labels, self.s.classification, self.s.threshold,
                          perplexity=self.language_model)
        self.model.train()
        self._hook("validation_ended")
        return {f"val/{k}": v for k, v in result.items()}

    def finish(self):
        """Evaluate the best checkpoint on the test split and write summary.json."""
        wall_time, final = self.elapsed(), {**self.last_metrics, **(self.s.data.baseline or {})}
        self.checkpoints.writer.flush()
        if self.cluster.is_main:  # the only rank that wrote (and so can read) the best checkpoint
            test = self.test_metrics()
            self.log.test_scalars(test, self.at.step, self.at.epoch)
            final.update(test)
        final.update({"best_epoch": self.checkpoints.best.epoch, "epochs": self.at.epoch, "steps": self.at.step,
                      "wall_time_s": round(wall_time, 3),
                      "samples_per_sec": round(self.running.samples_total / wall_time, 1) if wall_time > 0 else None})
        if self.s.device.type == "cpu":  # what a CPU run's speed depends on: train.threads as it resolved
            final["threads"] = torch.get_num_threads()
        results = {k: v for k, v in final.items() if k.split("/")[0] in ("train", "val", "test")}
        self.log.hparams(self.cfg.to_dict(), results)
        self.log.flush()  # the test row on disk before summary.json, which marks the run as done
        if self.cluster.is_main:
            write_text(self.run_dir / "summary.json", json.dumps(final, indent=2) + "\n")
        return final

    def test_metrics(self):
        """The best checkpoint's (else the current model's) metrics on the test split."""
        best_path = self.run_dir / "checkpoints" / "best.pt"
        if best_path.exists():
            self.model.load_state_dict(checkpoint.load(best_path)["model"])
        x, targets, labels = self.s.split("test")
        self.model.eval()
        test = evaluate(self.model, self.loss, x, targets, labels, self.s.classification, self.s.threshold,
                        perplexity=self.language_model)
        return {f"test/{k}": v for k, v in test.items()}

    def elapsed(self):
        """Seconds spent training this run so far, over every process that resumed it."""
        started = getattr(self, "_started", None)
        return self.elapsed_before + (time.perf_counter() - started if started is not None else 0.0)

    def _hook(self, name, *args):
        method = getattr(self.hooks, name, None)
        if method is not None:
            method(*args)
