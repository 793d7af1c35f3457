"""The notebooks run top to bottom (executed with nbclient), so they cannot rot."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the notebooks extra")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the notebooks extra")
pytest.importorskip("ipykernel", reason="notebook tests need ipykernel")
pytest.importorskip("matplotlib", reason="notebook tests need matplotlib")

HERE = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))
#: each notebook takes 3-17 s on the 2-core development machine; the budget leaves room for CI
BUDGET_S = 120

pytestmark = pytest.mark.notebooks


def test_notebooks_exist_and_match_generator():
    assert [p.stem for p in NOTEBOOKS] == ["01_accuracy_and_stability", "02_sparse_semantics",
                                           "03_learned_sparsity", "04_performance",
                                           "05_sparse_ffn"]
    spec = importlib.util.spec_from_file_location("make_notebooks", HERE / "make_notebooks.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for path in NOTEBOOKS:
        cells = [c.source for c in nbformat.read(path, as_version=4).cells]
        assert cells == gen.NOTEBOOKS[path.name], \
            f"{path.name} is out of date: run python notebooks/make_notebooks.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit notebooks without outputs"
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=BUDGET_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.perf_counter() - t0
    assert elapsed < BUDGET_S, f"{path.name} took {elapsed:.0f} s"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
