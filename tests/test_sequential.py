"""Sequential: parity with torch.nn.Sequential, state dicts, dtype moves, inference mode, and check_model."""

import pytest
import torch
import torch.nn.functional as F

import manualnet as mn
from manualnet import LayerError, Sequential
from manualnet.verify import all_passed, check_model, format_table
from tests.conftest import randn

# manualnet layer -> the torch.nn module computing the same function
TORCH_EQUIVALENT = {
    mn.Linear: lambda layer: torch.nn.Linear(layer.in_features, layer.out_features, bias="bias" in layer.params),
    mn.ReLU: lambda layer: torch.nn.ReLU(),
    mn.LeakyReLU: lambda layer: torch.nn.LeakyReLU(layer.negative_slope),
    mn.Sigmoid: lambda layer: torch.nn.Sigmoid(),
    mn.Tanh: lambda layer: torch.nn.Tanh(),
    mn.Softmax: lambda layer: torch.nn.Softmax(layer.dim),
    mn.LogSoftmax: lambda layer: torch.nn.LogSoftmax(layer.dim),
    mn.Flatten: lambda layer: torch.nn.Flatten(layer.start_dim, layer.end_dim),
    mn.Identity: lambda layer: torch.nn.Identity(),
    mn.Dropout: lambda layer: torch.nn.Dropout(layer.p),
}


def every_builtin_model(generator_seed=0):
    """A model using every built-in layer once, 6 features in, 4 class scores out."""
    torch.manual_seed(generator_seed)
    return Sequential(
        mn.Flatten(), mn.Linear(6, 8), mn.ReLU(), mn.Linear(8, 8, init="xavier_uniform"), mn.LeakyReLU(0.1),
        mn.Dropout(0.25, generator=torch.Generator().manual_seed(3)), mn.Tanh(), mn.Identity(), mn.Linear(8, 5),
        mn.Sigmoid(), mn.Linear(5, 4, bias=False), mn.Softmax(dim=1), mn.Linear(4, 4), mn.LogSoftmax(dim=1),
    ).to(dtype=torch.float64)


def torch_copy(model):
    twin = torch.nn.Sequential(*(TORCH_EQUIVALENT[type(layer)](layer) for layer in model)).to(torch.float64)
    twin.load_state_dict(model.state_dict())
    return twin


def test_state_dict_loads_into_torch_sequential_with_the_same_outputs_and_gradients():
    model = every_builtin_model().eval()
    twin = torch_copy(model).eval()
    x, target = randn((7, 2, 3), seed=0), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    y = model.forward(x)
    torch.testing.assert_close(y, twin(x), rtol=1e-12, atol=1e-14)

    loss = mn.CrossEntropyLoss()
    loss.forward(y, target)
    model.backward(loss.backward(), input_grad=False)
    F.cross_entropy(twin(x), target).backward()
    for name, param in twin.named_parameters():
        torch.testing.assert_close(model.grads[name], param.grad, rtol=1e-10, atol=1e-14)


def test_loading_torch_parameters_that_require_grad_keeps_ours_free_of_autograd():
    torch.manual_seed(0)
    model = Sequential(mn.Linear(3, 4), mn.ReLU(), mn.Linear(4, 2))
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model.load_state_dict(dict(twin.named_parameters()))
    for name, p in model.named_parameters():
        assert not p.requires_grad and p.grad_fn is None
        assert torch.equal(p, twin.state_dict()[name])


def test_state_dict_round_trips_between_models():
    source, target = every_builtin_model(0), every_builtin_model(1)
    target.load_state_dict(source.state_dict())
    assert all(torch.equal(target.params[name], p) for name, p in source.named_parameters())


def test_a_copied_state_dict_keeps_its_values_when_the_model_trains_on():
    for model in (every_builtin_model(0), Sequential(mn.Linear(3, 4).to(dtype=torch.float64), mn.Linear(4, 2))):
        copy, live = model.state_dict(copy=True), model.state_dict()
        before = {name: p.clone() for name, p in model.named_parameters()}
        for p in model.parameters():
            p.add_(1.0)  # an update, in place as the optimizer makes it
        assert list(copy) == list(model.params)
        assert all(torch.equal(copy[name], before[name]) for name in before)
        assert all(live[name] is p for name, p in model.named_parameters())


def test_strict_load_lists_missing_unexpected_and_misshaped_names():
    model = Sequential(mn.Linear(3, 4), mn.ReLU(), mn.Linear(4, 2))
    state = dict(model.state_dict())
    del state["2.bias"]
    state["5.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(4, 4)
    with pytest.raises(LayerError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "missing 2.bias" in message
    assert "unexpected 5.weight" in message
    assert "mis-shaped 0.weight: checkpoint (4, 4) vs model (4, 3)" in message


def test_non_strict_load_skips_missing_and_unexpected_names_but_not_misshaped():
    model = Sequential(mn.Linear(3, 4))
    before = model.params["0.bias"].clone()
    model.load_state_dict({"0.weight": torch.ones(4, 3), "9.weight": torch.ones(1)}, strict=False)
    assert torch.equal(model.params["0.weight"], torch.ones(4, 3))
    assert torch.equal(model.params["0.bias"], before)
    with pytest.raises(LayerError, match=r"mis-shaped 0.weight: checkpoint \(3, 3\) vs model \(4, 3\)"):
        model.load_state_dict({"0.weight": torch.ones(3, 3)}, strict=False)


def test_repr_shows_each_layer_and_the_parameter_counts():
    text = repr(Sequential(mn.Linear(3, 4), mn.ReLU(), mn.Linear(4, 2)))
    assert "(0): Linear(in_features=3, out_features=4, bias=True)  # 16 params" in text
    assert "(1): ReLU()" in text and "(1): ReLU()  #" not in text
    assert "(2): Linear(in_features=4, out_features=2, bias=True)  # 10 params" in text
    assert text.endswith(")  # 26 parameters")


def test_to_dtype_keeps_the_identity_of_the_dict_entries():
    model = Sequential(mn.Linear(3, 4), mn.Tanh(), mn.Linear(4, 2))
    params, grads = dict(model.params), dict(model.grads)
    model.to(dtype=torch.float64)
    for name in params:
        assert model.params[name] is params[name] and model.params[name].dtype == torch.float64
        assert model.grads[name] is grads[name] and model.grads[name].dtype == torch.float64
    assert model.params["0.weight"] is model[0].params["weight"]
    with pytest.raises(LayerError, match="needs a floating dtype"):
        model.to(dtype=torch.int64)


def test_parameters_and_gradients_are_views_of_two_flat_buffers():
    model = Sequential(mn.Linear(3, 4), mn.Tanh(), mn.Linear(4, 2)).to(dtype=torch.float64)
    flat_params, flat_grads = model.flat_buffers()
    assert flat_params.numel() == flat_grads.numel() == 3 * 4 + 4 + 4 * 2 + 2
    flat_params.fill_(0.5)
    flat_grads.fill_(1.0)
    assert all(torch.all(p == 0.5) for p in model.parameters())
    assert all(torch.all(model[i].grads[k] == 1.0) for i in (0, 2) for k in ("weight", "bias"))
    model.zero_grad()
    assert torch.count_nonzero(flat_grads) == 0


def test_a_layer_moved_on_its_own_leaves_the_flat_layout_and_zero_grad_still_clears_it():
    model = Sequential(mn.Linear(3, 4), mn.Tanh(), mn.Linear(4, 2))
    model[2].to(dtype=torch.float64)
    assert model.flat_buffers() is None
    for g in (p.grad for p in model.parameters()):
        g.fill_(1.0)
    model.zero_grad()
    assert all(torch.count_nonzero(g) == 0 for g in (p.grad for p in model.parameters()))
    model.to(dtype=torch.float64)   # the whole model: flat again
    assert model.flat_buffers() is not None


def test_backward_writes_into_its_own_temporaries_but_never_into_the_callers_dy():
    torch.manual_seed(0)
    model = Sequential(mn.Linear(3, 4), mn.ReLU(), mn.Linear(4, 4), mn.ReLU()).to(dtype=torch.float64)
    x, dy = randn((5, 3), seed=1), randn((5, 4), seed=2)
    given = dy.clone()
    model.forward(x)
    dx = model.backward(dy)
    assert torch.equal(dy, given)
    assert [reuse for _, reuse in model._backward_plan] == [False, False, True]  # ReLU 3, Linear 2, ReLU 1
    assert not any(layer.reuse_dy for layer in model)                      # a standalone call copies again
    twin = torch_copy(model)
    x_ref = x.clone().requires_grad_()
    twin(x_ref).backward(dy)
    torch.testing.assert_close(dx, x_ref.grad, rtol=1e-12, atol=0)


def test_forward_hands_out_a_copy_of_every_layers_output_on_both_of_its_paths():
    model = every_builtin_model().eval()
    x = randn((5, 6), seed=1)
    expected = []
    for layer in model:
        expected.append(layer.forward(expected[-1] if expected else x))
    for attempt in ("checked", "fast"):  # the first call runs the layers' checks, the second skips them
        outputs = []
        y = model.forward(x, outputs=outputs)
        assert len(outputs) == len(model), attempt
        for got, want in zip(outputs, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert outputs[-1] is not y and outputs[-1].data_ptr() != y.data_ptr()  # copies, not the tensors
        y.zero_()                                                                # backward may reuse
        torch.testing.assert_close(outputs[-1], expected[-1], rtol=0, atol=0)


def test_forward_under_inference_mode_keeps_no_cache():
    model = every_builtin_model()
    with torch.inference_mode():
        y = model.forward(randn((3, 6), seed=0))
    assert all(layer.cache is None for layer in model)
    with pytest.raises(LayerError, match="call forward first"):
        model.backward(torch.ones_like(y))


def test_batch_of_one_and_non_contiguous_input_give_the_batch_results():
    model = every_builtin_model().eval()
    x = randn((6, 5), seed=0).t()               # (5, 6), not contiguous
    assert not x.is_contiguous()
    full = model.forward(x)
    torch.testing.assert_close(full, model.forward(x.contiguous()), rtol=0, atol=0)
    torch.testing.assert_close(model.forward(x[2:3]), full[2:3], rtol=1e-12, atol=1e-15)


# -- check_model -----------------------------------------------------------------------------------------------

def test_check_model_passes_a_model_of_every_builtin_layer_in_train_mode():
    model = every_builtin_model()
    x, target = randn((5, 6), seed=1), torch.tensor([0, 3, 1, 2, 3])
    rows = check_model(model, mn.NLLLoss(), x, target, fd=True, tol=1e-10)
    assert all_passed(rows), format_table(rows)
    per_layer = {(row.index, row.layer) for row in rows if row.index is not None}
    assert per_layer == {(i, layer.describe()) for i, layer in enumerate(model)} | {(len(model), "NLLLoss")}
    end_to_end = [row.tensor for row in rows if row.index is None]
    assert end_to_end == ["loss", "dx"] + [f"d{name}" for name, _ in model.named_parameters()]


def test_check_model_points_at_the_wrong_layer():
    class SigmoidMissingAFactor(mn.Sigmoid):
        def backward(self, dy):
            y = self.take_cache()
            return dy * y                       # forgot (1 - y)

    model = Sequential(mn.Linear(4, 5), SigmoidMissingAFactor(), mn.Linear(5, 3)).to(dtype=torch.float64)
    rows = check_model(model, mn.MSELoss(), randn((6, 4), seed=0), randn((6, 3), seed=1), fd=True)
    failed = {(row.index, row.tensor) for row in rows if not row.passed}
    assert (1, "dx") in failed and not any(index in (0, 2, 3) for index, _ in failed)
    assert {(None, "d0.weight"), (None, "dx")} <= failed
    assert (None, "d2.weight") not in failed    # downstream of the bug, the gradients are still right


def test_check_model_leaves_the_model_untouched():
    model = every_builtin_model()
    for g in (p.grad for p in model.parameters()):
        g.fill_(1.0)
    before = {name: p.clone() for name, p in model.named_parameters()}
    generator_state = model[5].generator.get_state()
    check_model(model, mn.NLLLoss(), randn((5, 6), seed=1), torch.tensor([0, 3, 1, 2, 3]))
    assert all(torch.equal(model.params[name], p) for name, p in before.items())
    assert all(torch.equal(g, torch.ones_like(g)) for g in (p.grad for p in model.parameters()))
    assert torch.equal(model[5].generator.get_state(), generator_state)


@pytest.mark.cuda
def test_check_model_passes_on_cuda():
    model = Sequential(mn.Linear(6, 8), mn.ReLU(), mn.Dropout(0.2), mn.Linear(8, 4)).to(device="cuda")
    x, target = randn((5, 6), seed=1, device="cuda"), torch.tensor([0, 3, 1, 2, 3], device="cuda")
    rows = check_model(model, mn.CrossEntropyLoss(), x, target, fd=True) + check_model(
        model, mn.CrossEntropyLoss(), x.float(), target, dtype=torch.float32)
    assert all_passed(rows), format_table(rows)


def _reseed(model):
    torch.manual_seed(1)
    for layer in model:
        if getattr(layer, "generator", None) is not None:
            layer.generator.manual_seed(1)


def _set_and_accumulated(model, x, dy):
    """Gradients of backward(accumulate=False) over stale ones, and of zero_grad() then backward()."""
    for g in (p.grad for p in model.parameters()):
        g.fill_(7.0)  # stale gradients: a set must not see them
    _reseed(model)  # the same Dropout mask both times
    model.forward(x)
    model.backward(dy.clone(), accumulate=False)
    written = {k: g.clone() for k, g in ((n, p.grad) for n, p in model.named_parameters())}
    model.zero_grad()
    _reseed(model)
    model.forward(x)
    model.backward(dy.clone())
    return written, model.grads


def test_backward_that_sets_the_gradients_equals_zero_grad_then_backward(layer_case):
    # Every registered layer after a Linear (which writes its gradients in its GEMMs).
    torch.manual_seed(0)
    *lead, features = layer_case.shape
    model = mn.Sequential(mn.Linear(3, features).to(dtype=torch.float64), layer_case.make())
    x = torch.randn(*lead, 3, dtype=torch.float64)
    y = model.forward(x)
    dy = torch.randn(y.shape, dtype=torch.float64)
    model.backward(dy)  # a warm-up through every cache
    written, accumulated = _set_and_accumulated(model, x, dy)
    for name, g in accumulated.items():
        torch.testing.assert_close(written[name], g, rtol=1e-12, atol=1e-12, msg=name)
