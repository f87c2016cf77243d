"""TensorBoard histograms and update ratios: the batched computations give what one op per tensor gives."""

import math

import pytest
import torch

import manualnet as mn
from manualnet.log import telemetry


def reference(v, bins):
    v = v.reshape(-1)
    lo, hi = v.min().item(), v.max().item()
    hi = hi if hi > lo else lo + 1e-12
    counts = torch.histc(v, bins=bins, min=lo, max=hi).long().tolist()
    return lo, hi, v.double().sum().item(), v.double().square().sum().item(), counts


def test_a_sampled_histogram_sees_every_column():
    weight = torch.randn(100, 784, generator=torch.Generator().manual_seed(0))
    weight[:, ::2] = 0.0  # half the columns zero: every 2nd value, a stride dividing the row, would see only them
    counts = telemetry.bucket_counts(weight.reshape(-1), 3, -5.0, 5.0, row=784).tolist()
    assert counts == pytest.approx(torch.histc(weight, 3, -5.0, 5.0).tolist(), abs=0.01 * weight.numel())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_histogram_data_is_each_tensors_statistics_and_histc_buckets(dtype):
    gen = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(100, generator=gen), "b": torch.randn(3, 4, generator=gen) * 5 + 2,
               "c": torch.randn(250, generator=gen), "const": torch.full((5,), 3.0), "one": torch.tensor([7.0]),
               "empty": torch.zeros(0), "inf": torch.tensor([1.0, math.inf]), "nan": torch.tensor([math.nan, 1.0]),
               "big": torch.randn(100_000, generator=gen)}
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    tensors["other dtype"] = torch.randn(9, generator=gen, dtype=torch.float64 if dtype == torch.float32 else None)
    data = telemetry.histogram_data(tensors, bins=7)
    assert [row[0] for row in data] == ["a", "b", "c", "const", "one", "big", "other dtype"]  # no non-finite, no empty
    for tag, num, lo, hi, total, squares, counts in data:
        ref_lo, ref_hi, ref_total, ref_squares, ref_counts = reference(tensors[tag], 7)
        assert num == tensors[tag].numel() and sum(counts) == pytest.approx(num, rel=1e-9)
        assert (lo, hi) == (ref_lo, ref_hi)
        assert total == pytest.approx(ref_total, rel=1e-5, abs=1e-5)
        assert squares == pytest.approx(ref_squares, rel=1e-5)
        if num <= telemetry.HISTOGRAM_SAMPLE:
            assert counts == ref_counts, tag
        else:  # every 2nd value of 100,000, counted twice: the shape, within sampling noise
            assert all(c % 2 == 0 for c in counts) and counts != ref_counts
            assert counts == pytest.approx(ref_counts, abs=0.01 * num)
        assert telemetry.bucket_limits(lo, hi, 7)[-1] == pytest.approx(hi, rel=1e-12)


def test_update_ratios_are_log10_of_the_update_norm_over_the_parameter_norm():
    torch.manual_seed(0)
    for model in (mn.Sequential(mn.Linear(3, 5), mn.ReLU(), mn.Linear(5, 1, bias=True)),
                  mn.Sequential(mn.Linear(3, 5).to(dtype=torch.float64), mn.Linear(5, 2))):  # no flat buffer
        before = telemetry.parameters_before(model)
        old = {k: p.clone() for k, p in model.named_parameters()}
        for name, p in model.named_parameters():
            if name != "0.bias":  # a parameter that did not move: -inf
                p.add_(torch.randn_like(p) * 0.01)
        expected = {k: math.log10((p - old[k]).norm().item() / p.norm().item()) if k != "0.bias" else -math.inf
                    for k, p in model.named_parameters()}
        assert telemetry.update_ratios(before) == pytest.approx(expected, rel=1e-5)


def test_a_large_parameters_update_ratio_is_estimated_from_a_spread_sample():
    torch.manual_seed(0)
    model = mn.Sequential(mn.Linear(784, 100), mn.ReLU(), mn.Linear(100, 10))  # 78,400 weights: sampled
    before = telemetry.parameters_before(model)
    assert sum(b.numel() for b in before.copies) < sum(p.numel() for p in model.parameters())  # the large: sampled
    old = {k: p.clone() for k, p in model.named_parameters()}
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.01 * (1 + torch.rand_like(p)))
    exact = [math.log10((p - old[k]).norm().item() / p.norm().item()) for k, p in model.named_parameters()]
    estimated = list(telemetry.update_ratios(before).values())
    assert estimated[0] != exact[0] and estimated[0] == pytest.approx(exact[0], abs=0.02)  # this seed: 0.006
    assert estimated[1:] == pytest.approx(exact[1:], rel=1e-5)  # the small ones: every value
    weight = model[0].weight
    weight.data = weight.data.t().contiguous().t()  # not contiguous: its sample is a copy, taken again after
    before, old = telemetry.parameters_before(model), weight.clone()
    weight.add_(torch.randn_like(weight) * 0.01)
    ratio = telemetry.update_ratios(before)["0.weight"]
    assert ratio == pytest.approx(math.log10((weight - old).norm().item() / weight.norm().item()), abs=0.02)


def test_activation_histograms_are_the_outputs_of_the_steps_own_forward(tmp_path, monkeypatch):
    from manualnet.config.load import load_config
    from manualnet.config.setup import build
    from manualnet.training import trainer as trainer_module
    from tests.helpers import config_path

    setup = build(load_config(config_path("spirals"), ["log.histograms_every=3"]))
    trainer = trainer_module.Trainer(setup, tmp_path, quiet=True)
    seen, batches, befores = [], [], {}
    monkeypatch.setattr(trainer_module, "log_histograms",
                        lambda log, model, activations, step: seen.append((activations, befores[step], step)))
    step = trainer.train_step

    def recorded_step(xb, tb, lb):  # the batch and the weights each step's forward ran with
        batches.append(xb.clone())
        befores[trainer.at.step + 1] = [p.clone() for p in trainer.model.parameters()]
        step(xb, tb, lb)

    trainer.train_step = recorded_step
    with torch.no_grad():
        for xb, tb, lb in list(trainer.batches.epoch(0))[:6]:
            trainer.train_step(xb, tb, lb)
    trainer.log.close()
    assert [step for _, _, step in seen] == [3, 6]
    twin = build(load_config(config_path("spirals"))).model
    for activations, before, step in seen:
        for p, b in zip(twin.parameters(), before, strict=True):
            p.copy_(b)  # the weights this step's forward ran with, before its update
        expected, x = {}, batches[step - 1]
        for i, layer in enumerate(twin.layers):
            x = expected[f"{i}.{type(layer).__name__}"] = layer.forward(x)
        assert list(activations) == list(expected)
        for tag, want in expected.items():
            torch.testing.assert_close(activations[tag], want, rtol=0, atol=0)
