"""The notebooks in examples/ run top to bottom, so they cannot rot: each asserts that its hand-derived
gradients pass ``compare``, so a wrong derivation or a changed API fails here. They are stored without
outputs, so what a user opens is the exercise, not a stale result."""

import os

import ipykernel  # noqa: F401 - the kernel the notebooks run in (the dev extra installs it)
import jupyter_client
import nbclient
import nbformat
import pytest

from tests.helpers import ROOT

NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))
IDS = [path.stem for path in NOTEBOOKS]


@pytest.fixture(scope="module")
def kernel():
    """One python3 kernel for all the notebooks, in the repository root with this checkout first on the path
    (an editable install may point at another). Starting a kernel and importing torch cost seconds each on a
    busy machine, so they are paid once; each notebook starts from an empty namespace (``%reset -f``)."""
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(ROOT), env={**os.environ, "PYTHONPATH": path})
    yield manager
    manager.shutdown_kernel(now=True)


def test_there_is_a_notebook_for_each_seed_exercise_family():
    assert IDS == ["01_scalar_chains", "02_vector_jacobian_products", "03_losses_and_softmax",
                   "04_mlp_step_by_hand", "05_finite_differences"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_top_to_bottom_with_this_checkout(path, kernel):
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
    notebook.cells.append(nbformat.v4.new_code_cell("import manualnet\nprint(manualnet.__file__)"))
    client = nbclient.NotebookClient(notebook, km=kernel, timeout=60)
    try:
        client.execute()
    except Exception:
        kernel.restart_kernel(now=True)     # the next notebook gets a kernel this one did not break or hang
        raise
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    assert notebook.cells[-1].outputs[0]["text"].strip() == str(ROOT / "manualnet" / "__init__.py")
