"""TensorBoard event files: what TensorBoard reads back, after a flush, a kill and a resume."""

import json
import time

import pytest
import torch
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from manualnet.log.event_file import EventFile
from manualnet.log.logger import MetricsLogger
from tests.helpers import config_path


def accumulated(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    return events


def losses(log_dir, tag="train/loss"):
    return [(e.step, e.value) for e in accumulated(log_dir).Scalars(tag)]


def test_flushed_events_are_readable_while_the_file_is_still_open(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=True, handoff_s=3600)
    log.scalars({"train/loss": 2.0, "lr": 0.1}, 10, 0)
    assert list(tmp_path.glob("events.out.tfevents.*"))  # the file exists from the start
    log.flush()
    assert losses(tmp_path) == [(10, 2.0)] and losses(tmp_path, "lr") == [(10, pytest.approx(0.1))]
    log.text("config", "a: 1")
    log.hparams({"optim": {"type": "SGD", "lr": 0.1}, "model": [{"type": "Linear", "out_features": 3}],
                 "train": {"grad_clip": None, "threads": "auto"}, "plugins": []},
                {"test/loss": 0.5, "note": "text"})
    events = accumulated(tmp_path)
    assert "config/text_summary" in events.Tags()["tensors"]
    content = events.PluginTagToContent("hparams")  # the HPARAMS tab's experiment and session records
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {h.name for h in experiment.hparam_infos} == {"optim.type", "optim.lr", "model.0.type",
                                                         "model.0.out_features", "train.grad_clip",
                                                         "train.threads", "plugins"}
    assert [m.name.tag for m in experiment.metric_infos] == ["test/loss"]  # only numbers are metrics
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["train.grad_clip"].string_value == "null" and session.hparams["optim.lr"].number_value == 0.1
    assert set(events.Tags()["scalars"]) == {"train/loss", "lr"}  # no one-point hparams/ charts
    log.close()


def test_a_resumed_run_replaces_the_events_after_its_checkpoint_and_keeps_the_checkpoints_own(tmp_path):
    killed = MetricsLogger(tmp_path, tensorboard=True)
    for step in range(1, 9):
        killed.scalars({"train/loss": float(step)}, step, 0)
        if step == 6:
            killed.flush()  # as the trainer does before its checkpoint at step 6
    killed.flush()  # steps 7 and 8 reached the disk too before the kill
    killed.jsonl.close()  # killed: no close of its own
    time.sleep(1.05)  # a process resuming it starts later; event files are ordered by their names' seconds
    resumed = MetricsLogger(tmp_path, tensorboard=True, purge_step=6)
    for step in range(7, 11):
        resumed.scalars({"train/loss": 10.0 * step}, step, 0)
    resumed.close()
    assert losses(tmp_path) == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 6.0),
                                (7, 70.0), (8, 80.0), (9, 90.0), (10, 100.0)]
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))  # the rows, the same way


def test_two_files_opened_in_the_same_second_are_two_files(tmp_path):
    a, b = EventFile(tmp_path), EventFile(tmp_path)
    a.close()
    b.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2


def test_a_checkpoint_is_written_after_the_events_up_to_its_step(tmp_path):
    from manualnet.config.load import load_config
    from manualnet.config.setup import build
    from manualnet.training.trainer import Trainer

    setup = build(load_config(config_path("mlp"), ["train.epochs=2", "train.checkpoint_interval_s=0",
                                                   "log.every=5", "log.histograms_every=0"]))
    trainer = Trainer(setup, tmp_path, quiet=True)
    on_disk = []  # at each checkpoint: its step, and the last step of the event file's epoch metrics
    submit = trainer.checkpoints.writer.submit

    def checking_submit(state, paths):
        if "optim" in state:  # last.pt, not a best.pt of its own
            on_disk.append((state["step"], losses(tmp_path, "val/loss")[-1][0]))
        submit(state, paths)

    trainer.checkpoints.writer.submit = checking_submit
    trainer.log.handoff_s = 3600.0  # no hand-off but the checkpoints' own
    with torch.no_grad():
        trainer.fit()
    steps = len(trainer.batches)
    assert on_disk == [(steps, steps), (2 * steps, 2 * steps)]


def test_the_file_receives_whole_records_at_each_flush_and_nothing_between(tmp_path):
    from tensorboard.compat.proto.summary_pb2 import Summary

    events = EventFile(tmp_path)
    (path,) = tmp_path.glob("events.out.tfevents.*")
    size = path.stat().st_size  # the file version record, flushed when the file is made
    assert size > 0
    for step in range(100):
        events.add_summary(Summary(value=[Summary.Value(tag="x", simple_value=step)]), step)
    assert path.stat().st_size == size  # framed in memory: a reader cannot find half a record
    events.flush()
    assert path.stat().st_size > size
    assert [e.step for e in accumulated(tmp_path).Scalars("x")] == list(range(100))
    events.add_summary(Summary(value=[Summary.Value(tag="x", simple_value=100)]), 100)
    events.close()  # flushes what is left
    assert len(accumulated(tmp_path).Scalars("x")) == 101


def test_scalars_logged_one_after_another_at_a_step_are_one_event_and_all_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    log = MetricsLogger(tmp_path, tensorboard=True, handoff_s=3600)
    log.scalars({"train/loss": 2.0, "lr": 0.1}, 10, 1)
    log.tensorboard_scalars({"update_ratio/0.weight": -3.0}, 10)
    log.tensorboard_scalars({"lr": 0.2}, 10)  # a tag already in the step's event: an event of its own
    log.tensorboard_scalars({"epoch": 1}, 11)
    log.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    steps = [e.step for e in EventFileLoader(str(path)).Load() if e.HasField("summary")]
    assert steps == [10, 10, 11]
    assert losses(tmp_path, "update_ratio/0.weight") == [(10, -3.0)] and losses(tmp_path) == [(10, 2.0)]
    assert [v for _, v in losses(tmp_path, "lr")] == [pytest.approx(0.1), pytest.approx(0.2)]


def test_a_full_disk_while_writing_events_names_the_event_file(tmp_path):
    import errno

    from tensorboard.compat.proto.summary_pb2 import Summary

    from manualnet.files import storage_error

    events = EventFile(tmp_path)

    class FullDisk:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    events._file = FullDisk()
    events.add_summary(Summary(), 1)
    with pytest.raises(OSError) as full:
        events.flush()
    assert str(storage_error(full.value)) == f"cannot write {events.path}: No space left on device"
