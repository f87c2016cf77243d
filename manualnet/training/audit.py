"""``verify.every``: during training, every hand-written gradient checked against autograd on a batch."""

import torch

from manualnet.errors import AuditFailed
from manualnet.verify import check_model, format_table, verdict


def audit(trainer, xb, tb):
    """Check every module's gradients on this batch against autograd, on a float64 copy of the model; log the
    worst relative error per module as ``verify/<path>.<type>``; stop the run on a failure (on any rank)."""
    t = trainer
    with torch.enable_grad():
        rows = check_model(t.model, t.loss, xb, tb, dtype=torch.float64)
    worst, modules = {}, dict(t.model.named_modules())
    for row in rows:
        if row.index in modules:
            tag = f"verify/{row.index}.{type(modules[row.index]).__name__}"
            worst[tag] = max(worst.get(tag, 0.0), row.max_rel_err)
    t.log.scalars(worst, t.at.step, t.at.epoch + 1)
    failed = [row for row in rows if not row.passed]
    if t.cluster.sum([len(failed)])[0]:  # every rank stops when any rank's shard failed
        t.checkpoints.stop_cleanly()
        found = f"{verdict(rows)}\n{format_table(failed)}" if failed else "on another rank's shard"
        raise AuditFailed(f"gradient audit failed at step {t.at.step + 1}: {found}")
