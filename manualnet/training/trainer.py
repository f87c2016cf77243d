"""The training loop: epochs of forward, loss, backward (zero_grad folded in), clip, step; validation; checkpoints.

``Trainer(setup, run_dir).fit()`` trains and returns the summary. Read ``fit`` and ``train_step`` top to
bottom for the whole algorithm; the rest is bookkeeping (metrics, checkpoints, signals).
"""

import contextlib
import json
import math
import signal
import time

import torch

from manualnet.data import Batches
from manualnet.data.text import save_vocabulary
from manualnet.errors import CheckpointError, ManualnetError
from manualnet.files import write_text
from manualnet.log.language_model import log_language_model
from manualnet.log.logger import MetricsLogger
from manualnet.log.progress import Progress
from manualnet.log.telemetry import log_histograms, log_update_ratios, parameters_before, record_outputs
from manualnet.optim import clip_grad_norm, grad_norm
from manualnet.training import checkpoint
from manualnet.training.distributed import Single, restore_rng
from manualnet.training.divergence import Diverged, diagnose, diagnose_parameters
from manualnet.training.evaluate import accuracy_count, evaluate
from manualnet.training.run_dir import write_config
from manualnet.training.threads import cpu_threads, torch_threads
from manualnet.verify import check_model, format_table, verdict


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the run was checkpointed and can be resumed."""

    def __init__(self, signum, run_dir):
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; checkpoint saved. "
                         f"Resume with: manualnet train --resume {run_dir}")


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT or SIGTERM: the run stops without writing a checkpoint (exit code 128 + signal)."""

    def __init__(self, signum):
        self.exit_code = 128 + signum
        super().__init__(f"stopped at once by a second {signal.Signals(signum).name}; the previous checkpoint is kept")


class AuditFailed(Exception):
    """A ``verify.every`` audit found a hand-written gradient that disagrees with autograd (exit code 1)."""


class Trainer:
    def __init__(self, setup, run_dir, quiet=False, resume=None, cluster=None):
        self.s, self.cfg, self.run_dir = setup, setup.config, run_dir
        self.cluster = cluster or Single()
        main = self.cluster.is_main
        self.model, self.loss = setup.model, setup.loss
        x, targets, labels = setup.split("train")
        self.batches = Batches(x, targets, self.cfg.train.batch_size, setup.config.seed, labels=labels,
                               rank=self.cluster.rank, world_size=self.cluster.world_size)
        self.optimizer, self.schedule = setup.optimizer, setup.schedule
        rows = math.ceil(self.cfg.train.batch_size / self.cluster.world_size)  # a rank's share of a batch
        self.threads = cpu_threads(self.cfg.train.threads, self.model, rows, setup.device)  # None: torch's
        first = next(iter(self.model.children()), None)
        if hasattr(first, "needs_input_grad"):  # the model's input is data: nothing upstream wants its gradient
            first.needs_input_grad = False
        self.epoch, self.batch, self.step = 0, 0, 0
        self.best = {"val/loss": math.inf, "epoch": -1}
        self.running = _Running()
        self.elapsed_before = 0.0  # seconds of training before this process resumed the run
        self.validation_seconds = 0.0  # spent in validate() by this process
        self.last_metrics = {}
        self.writer = checkpoint.Writer()
        if resume is not None:
            self._restore(resume)
        self.language_model = bool(setup.data.inferred_sizes())  # token ids in, next-token logits out
        if main:
            write_config(run_dir, self.cfg)
            if self.language_model:
                save_vocabulary(run_dir, setup.data.classes)
        self.log = MetricsLogger(run_dir if main else None, self.cfg.log.tensorboard,
                                 purge_step=self.step if resume else None)
        self.progress = Progress(self.cfg.train.epochs, len(self.batches), self.epoch, quiet or not main)
        self.quiet = quiet or not main
        self._stop_signal = None  # set by the signal handler
        self._stopping = None  # the signal the ranks agreed to stop on
        self.parallel = self.cluster.world_size > 1
        self.last_batch = len(self.batches) - 1
        self.has_val = len(setup.split("val")[0]) > 0
        self.every = {"log": self.cfg.log.every, "histograms": self.cfg.log.histograms_every,
                      "verify": self.cfg.verify.every}
        self._saved_at = -math.inf  # when the last checkpoint was written (time.perf_counter)
        self._best_model = None  # the best epoch's weights, while best.pt does not hold them yet

    def fit(self):
        """Train to ``train.epochs``, then evaluate the best checkpoint on the test split."""
        self.started = started = time.perf_counter()
        self.running.start_clock()
        try:
            with _catch_signals(self), torch_threads(self.threads):
                self.log.text("config", json.dumps(self.cfg.to_dict(), indent=2))
                if self.cfg.verify.at_start and self.step == 0:
                    xb, tb, _ = next(iter(self.batches.epoch(0)))
                    self.audit(xb, tb)
                with torch.no_grad():  # manual backprop: autograd stays off throughout
                    while self.epoch < self.cfg.train.epochs:
                        self.train_epoch()
                        self.end_epoch()
                self.log.flush()  # the events still held, handed off now: the loop's cost, not the test's
                self.loop_seconds = time.perf_counter() - started  # the benchmark compares it with pure steps
                self.progress.close()
                summary = self.finish(self.elapsed())  # a signal now only lets it finish (twice: aborts)
        except BaseException:  # stopped (a signal, divergence, a failed audit, an error): keep what we have
            self._keep_what_was_done()
            raise
        finally:
            self.log.close()
        if self._stop_signal is not None and self.cluster.is_main:
            self.progress.message(f"manualnet: {signal.Signals(self._stop_signal).name} arrived as the run was "
                                  "finishing; it finished")
        return summary

    def _keep_what_was_done(self):
        """On the way out of a stopped run: the best weights on disk, the queued checkpoints written."""
        with contextlib.suppress(Exception):  # the error that stopped the run is the one to report
            self.stop_cleanly()

    def train_epoch(self):
        self.model.train()
        self._epoch_started = time.perf_counter()
        self.progress.start_epoch(self.epoch + 1, self.batch)
        for xb, tb, lb in self.batches.epoch(self.epoch, start_batch=self.batch):
            self.train_step(xb, tb, lb)
            self.batch += 1
            if self._stopping is not None:
                self.save()
                self.writer.flush()
                raise Interrupted(self._stopping, self.run_dir)

    def train_step(self, xb, tb, lb):
        """One step of the algorithm, on one batch (this rank's shard of it, in data-parallel training)."""
        size = self.batches.global_size(self.batch)
        weight = self.cluster.shard_weight(len(xb), size, self.loss.reduction) if self.parallel else 1.0
        step = self.step + 1  # this step's number, counted from 1
        histograms = self.every["histograms"] and step % self.every["histograms"] == 0 and self.cluster.is_main
        logging = step % self.every["log"] == 0
        activations = {} if histograms else None  # each top-level layer's output, for its histogram
        pred = record_outputs(self.model, xb, activations) if histograms else self.model(xb)
        loss = self.loss(pred, tb)
        value = loss.item() * weight
        if not (self.parallel or math.isfinite(value)):  # before backward: the last step's gradients are
            self.diverged(xb, tb, value)                  # still there, to tell which layer went non-finite
        self.optimizer.zero_grad()
        self.model.backward(self.loss.backward(weight))
        # Train accuracy is measured on the logging steps' batches, and on an epoch's last batch when none of
        # its batches was (so every epoch has one): counting every batch costs a few ops a step, as much as a
        # small network's layer.
        sampled = self.s.classification and (logging or (self.batch == self.last_batch and not self.running.counted))
        correct = accuracy_count(pred, lb, self.s.threshold) if sampled else None
        signum = self._stop_signal  # read once: this rank acts on what it adds to the sum
        if self.parallel:
            # Summed over the ranks with the gradients: the global batch's mean loss, its correct count and
            # how many ranks were asked to stop, so every rank logs the same numbers and stops together.
            value, correct, signals = self.cluster.reduce(self.optimizer.grad_buffers(),
                                                          [value, correct or 0, signum is not None])
            signum = (signum or signal.SIGTERM) if signals else None
            if not math.isfinite(value):  # the global loss: every rank stops here together
                self.diverged(xb, tb, value)
        if signum is not None:
            self._stopping = signum
        # The gradient norm when clipping or logging needs it (a sync and ~4% of a small net's step otherwise).
        # A non-finite gradient under a finite loss is caught then, or by the next step's loss once the update
        # has spread it into the weights, or before a checkpoint: never written to disk.
        clip, norm = self.cfg.train.grad_clip, None
        if clip is not None or logging:
            grads = self.optimizer.grad_buffers()
            norm = (clip_grad_norm(grads, clip) if clip is not None else grad_norm(grads)).item()
            if not math.isfinite(norm):  # every rank sees the same summed gradient: all stop
                self.diverged(xb, tb, value, norm)
        if self.every["verify"] and step % self.every["verify"] == 0:
            self.audit(xb, tb)
        # The update ratios of every logging step and the histograms need the parameters before the update.
        before = parameters_before(self.model) if histograms or (logging and self.cluster.is_main) else None
        self.optimizer.step()
        self.schedule.step()
        self.step = step
        self.running.add(value, correct if sampled else None, size)
        if logging:
            metrics = self.running.interval_metrics(self.optimizer.lr, norm)
            self.log.scalars(metrics, step, self.epoch + 1)
            self.progress.step(metrics)
            if before is not None:
                log_update_ratios(self.log, self.model, before, step)
        elif self.progress.tty:
            self.progress.step()
        if histograms:
            log_histograms(self.log, self.model, activations, step)

    def end_epoch(self):
        metrics = self.running.epoch_metrics()
        validated = (self.epoch + 1) % self.cfg.train.eval_every == 0 or self.epoch + 1 == self.cfg.train.epochs
        if validated:
            metrics.update(self.validate())
            if "val/loss" in metrics and not math.isfinite(metrics["val/loss"]):  # no checkpoint of this model
                self.stop_cleanly()
                raise Diverged(f"training diverged in epoch {self.epoch + 1}: the validation loss is "
                               f"{metrics['val/loss']:g} while the training loss was finite. Lower optim.lr "
                               "or set train.grad_clip")
        self.check_weights()  # before the best weights are copied or a checkpoint is written
        self.log.scalars(metrics, self.step, self.epoch + 1)  # epochs count from 1, as the progress lines do
        self.log.tensorboard_scalars({"epoch": self.epoch + 1}, self.step)
        if validated and self.language_model and self.cluster.is_main:
            log_language_model(self.log, self.model, self.s.data, self.step, self.cfg.seed)
        if time.perf_counter() - self._epoch_started >= self.log.handoff_s:  # the next chance may be an epoch
            self.log.write_rows()                                                # away: the rows go out now
        self.progress.end_epoch(self.epoch + 1, metrics)
        self.epoch, self.batch = self.epoch + 1, 0
        self.running.new_epoch()
        # The best epoch by validation loss among validated epochs; by train loss when there is no val split.
        score = metrics.get("val/loss", metrics["train/loss"])
        improved = (validated or not self.has_val) and score < self.best["val/loss"]
        if improved:
            self.best = {"val/loss": score, "epoch": self.epoch, "step": self.step}
            if self.cluster.is_main:  # the weights best.pt will hold, kept until a checkpoint writes them
                self._best_model = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.last_metrics = metrics
        # A checkpoint every checkpoint_every epochs, but not more often than every checkpoint_interval_s
        # seconds (epochs of milliseconds would spend more time saving than training); always the first
        # epoch this process trains (a run has a checkpoint from its first epoch on) and the last.
        due = self._saved_at == -math.inf or (
            self.epoch % self.cfg.train.checkpoint_every == 0
            and time.perf_counter() - self._saved_at >= self.cfg.train.checkpoint_interval_s)
        if self.cluster.broadcast(due) or self.epoch == self.cfg.train.epochs:  # rank 0's clock decides
            self.save()

    def audit(self, xb, tb):
        """Check every layer's gradients on this batch against autograd, on a float64 copy of the model;
        log the worst relative error per layer as ``verify/<index>.<type>``; stop the run on a failure."""
        with torch.enable_grad():
            rows = check_model(self.model, self.loss, xb, tb, dtype=torch.float64)
        worst, modules = {}, dict(self.model.named_modules())
        for row in rows:
            if row.index in modules:
                tag = f"verify/{row.index}.{type(modules[row.index]).__name__}"
                worst[tag] = max(worst.get(tag, 0.0), row.max_rel_err)
        self.log.scalars(worst, self.step, self.epoch + 1)
        failed = [row for row in rows if not row.passed]
        if self.cluster.sum([len(failed)])[0]:  # every rank stops when any rank's shard failed
            self.stop_cleanly()
            found = f"{verdict(rows)}\n{format_table(failed)}" if failed else "on another rank's shard"
            raise AuditFailed(f"gradient audit failed at step {self.step + 1}: {found}")

    def validate(self):
        started = time.perf_counter()
        x, targets, labels = self.s.split("val")
        self.model.eval()
        result = evaluate(self.model, self.loss, x, targets, labels, self.s.classification, self.s.threshold)
        if self.language_model and "loss" in result:  # the loss is nats per token: e^loss is the perplexity
            result["perplexity"] = math.exp(result["loss"])
        self.model.train()
        self.validation_seconds += time.perf_counter() - started  # the benchmark tells it from overhead
        return {f"val/{k}": v for k, v in result.items()}

    def finish(self, wall_time):
        """Evaluate the best checkpoint on the test split and write summary.json."""
        final = {**self.last_metrics, **(self.s.data.baseline or {})}
        self.writer.flush()
        if self.cluster.is_main:  # the only rank that wrote (and so can read) the best checkpoint
            test = self.test_metrics()
            self.log.scalars(test, self.step, self.epoch)
            final.update(test)
        samples = self.running.samples_total
        final.update({"best_epoch": self.best["epoch"], "epochs": self.epoch, "steps": self.step,
                      "wall_time_s": round(wall_time, 3),
                      "samples_per_sec": round(samples / wall_time, 1) if wall_time > 0 else None})
        if self.s.device.type == "cpu":  # what a CPU run's speed depends on: train.threads as it resolved
            final["threads"] = torch.get_num_threads()
        if self.cluster.is_main:
            write_text(self.run_dir / "summary.json", json.dumps(final, indent=2) + "\n")
        results = {k: v for k, v in final.items() if k.split("/")[0] in ("train", "val", "test")}
        self.log.hparams(self.cfg.to_dict(), results)
        return final

    def test_metrics(self):
        """The best checkpoint's (else the current model's) metrics on the test split."""
        best_path = self.run_dir / "checkpoints" / "best.pt"
        if best_path.exists():
            self.model.load_state_dict(checkpoint.load(best_path)["model"])
        x, targets, labels = self.s.split("test")
        self.model.eval()
        test = evaluate(self.model, self.loss, x, targets, labels, self.s.classification, self.s.threshold)
        return {f"test/{k}": v for k, v in test.items()}

    def elapsed(self):
        """Seconds spent training this run so far, over every process that resumed it."""
        started = getattr(self, "started", None)
        return self.elapsed_before + (time.perf_counter() - started if started is not None else 0.0)

    # -- checkpoints ------------------------------------------------------------------------------

    def save(self):
        """Checkpoint the run as ``checkpoints/last.pt``; write the best epoch's weights to ``best.pt`` if
        they are not there yet (the same file as last.pt, hard-linked, when this is the best epoch)."""
        self.check_weights()
        rngs = self.cluster.gather(checkpoint.rng_state())  # every rank's: Dropout masks differ by rank
        self._saved_at = time.perf_counter()
        if not self.cluster.is_main:
            return
        self.log.flush()  # metrics.jsonl and the event file hold all up to the checkpoint (after it: resumed)
        state = {"model": self.model.state_dict(), "optim": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "epoch": self.epoch, "batch": self.batch,
                 "step": self.step, "rng": rngs[0], "rng_ranks": rngs[1:], "config": self.cfg.to_dict(),
                 "best": dict(self.best), "running": self.running.state_dict(), "format": 1,
                 "elapsed_s": self.elapsed(), "last_metrics": dict(self.last_metrics)}
        folder = self.run_dir / "checkpoints"
        best_now = self._best_model is not None and self.best.get("step") == self.step
        self.writer.submit(state, [folder / "last.pt", *([folder / "best.pt"] if best_now else [])])
        self._best_model = None if best_now else self._best_model
        self.save_best()

    def check_weights(self):
        """Stop the run if an update made a weight non-finite (a non-finite gradient under a finite loss, on a
        step that computed no gradient norm): before such weights could be copied or checkpointed."""
        # One sum over the flat buffer: any NaN or infinity makes it non-finite (so would weights summing past
        # the dtype's range, broken anyway); a tenth of what torch.isfinite(...).all() costs.
        if not all(math.isfinite(p.sum().item()) for p in self.optimizer.param_buffers()):
            self.stop_cleanly()
            raise Diverged(f"training diverged by step {self.step}: {diagnose_parameters(self.model)}; it is "
                           "not checkpointed. Lower optim.lr or set train.grad_clip")

    def save_best(self):
        """Write the best epoch's weights to ``best.pt``, if a checkpoint has not written them yet."""
        if self._best_model is None:
            return
        state = {"model": self._best_model, "epoch": self.best["epoch"], "step": self.best.get("step"),
                 "best": dict(self.best), "config": self.cfg.to_dict(), "format": 1}
        self.writer.submit(state, [self.run_dir / "checkpoints" / "best.pt"])
        self._best_model = None

    def diverged(self, xb, tb, value, norm=None):
        """Stop the run on a non-finite loss (or gradient norm ``norm``), naming where it first appeared."""
        self.stop_cleanly()
        raise Diverged(diagnose(self.model, self.loss, xb, tb, self.step, value, norm))

    def stop_cleanly(self):
        """Before the run stops on an error: the best weights on disk, every checkpoint write complete."""
        self.save_best()
        self.writer.flush()

    def _restore(self, state):
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optim"])
            self.schedule.load_state_dict(state["schedule"])
            self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
            saved_batch_size = state["config"]["train"]["batch_size"]
            if self.batch and saved_batch_size != self.cfg.train.batch_size:  # the epoch's order is cut in batches
                raise CheckpointError(f"the checkpoint is {self.batch} batches into epoch {self.epoch + 1}, with "
                                      f"train.batch_size = {saved_batch_size}; it cannot go on with "
                                      f"{self.cfg.train.batch_size} mid-epoch (resume with batch size "
                                      f"{saved_batch_size} and change it once the epoch is done)")
            if self.epoch > self.cfg.train.epochs:
                raise CheckpointError(f"the run has already trained {self.epoch} epochs, more than train.epochs = "
                                      f"{self.cfg.train.epochs}; resume with --set train.epochs={self.epoch} "
                                      "or more")
            self.elapsed_before = state.get("elapsed_s", 0.0)
            self.last_metrics = dict(state.get("last_metrics", {}))
            self.best = dict(state["best"])
            self.running.load_state_dict(state["running"])
            restore_rng(state, self.cluster.rank, self.cfg.seed)
        except ManualnetError as e:
            raise CheckpointError(f"checkpoint does not fit this run: {e}") from None
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint is missing or has a malformed entry: {e}") from None


class _Running:
    """Running sums over the log interval and the epoch: [loss, batches, samples, correct, counted].

    ``loss`` adds each step's mean batch loss; ``correct`` / ``counted`` are the right predictions and the
    samples of the batches whose accuracy was measured (the logging steps' batches).
    """

    def __init__(self):
        self.samples_total = 0
        self.new_epoch()
        self.interval = [0.0, 0, 0, 0, 0]
        self._interval_start, self._interval_before = time.perf_counter(), 0.0

    def start_clock(self):
        """Time the current interval from now on (plus what a resumed run had spent in it)."""
        self._interval_start = time.perf_counter() - self._interval_before

    def new_epoch(self):
        self.epoch = [0.0, 0, 0, 0, 0]  # the logging interval runs on across epochs

    def add(self, loss, correct, samples):
        """One global batch (summed over ranks, so every rank holds the same sums): its mean ``loss``, its
        ``samples`` and ``correct`` predictions (None for a batch whose accuracy was not measured)."""
        self.samples_total += samples
        correct = None if correct is None else int(correct)  # one host sync, not one per sum
        for acc in (self.epoch, self.interval):
            acc[0] += loss
            acc[1] += 1
            acc[2] += samples
            if correct is not None:
                acc[3] += correct
                acc[4] += samples

    def interval_metrics(self, lr, norm):
        """The logging interval's mean loss and accuracy (``train/loss_step``, ``train/accuracy_step``: the
        epoch's are ``train/loss`` and ``train/accuracy``), learning rate, samples/s and gradient norm."""
        metrics = {f"{k}_step": v for k, v in _metrics(self.interval).items()}
        now = time.perf_counter()
        metrics.update({"lr": lr, "samples_per_sec": self.interval[2] / max(now - self._interval_start, 1e-9)})
        metrics["grad_norm"] = norm
        self.interval, self._interval_start = [0.0, 0, 0, 0, 0], now
        return metrics

    def epoch_metrics(self):
        return _metrics(self.epoch)

    @property
    def counted(self):
        """Samples of this epoch whose predictions were counted for its accuracy so far."""
        return self.epoch[4]

    def state_dict(self):
        return {"epoch": list(self.epoch), "interval": list(self.interval), "samples_total": self.samples_total,
                "interval_s": time.perf_counter() - self._interval_start}

    def load_state_dict(self, state):
        self.epoch = list(state["epoch"])
        self.interval = list(state.get("interval", [0.0, 0, 0, 0, 0]))
        self.samples_total = state["samples_total"]
        self._interval_before = state.get("interval_s", 0.0)
        self.start_clock()


def _metrics(sums):
    loss, batches, _, correct, counted = sums
    metrics = {"train/loss": loss / max(batches, 1)}
    if counted:
        metrics["train/accuracy"] = correct / counted
    return metrics


class _catch_signals:
    """While training, SIGINT and SIGTERM only ask the loop to stop after the current step (and a run that
    has trained its last step to finish); a second one stops at once (StoppedAtOnce)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.trainer._stop_signal is not None:  # asked twice: stop now, without the checkpoint
            raise StoppedAtOnce(signum)
        self.trainer._stop_signal = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False
