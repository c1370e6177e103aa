"""docs/compare_io_methods.ipynb runs end to end (small sizes), so it cannot rot."""
import os

import pytest

import fastio

if "libasan" in os.environ.get("LD_PRELOAD", "") or os.environ.get("FASTIO_SANITIZE") == "1":
    pytest.skip("the notebook plots with matplotlib, whose C++ extensions abort under the "
                "ASan preload", allow_module_level=True)
nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient")
pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel")
pytest.importorskip("matplotlib", reason="the notebook's plots need matplotlib")

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(HERE, "docs", "compare_io_methods.ipynb")


def test_notebook_runs_end_to_end(tmp_path, monkeypatch):
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    monkeypatch.setenv("FASTIO_LAB_NB_SIZE", "2M")
    monkeypatch.setenv("FASTIO_LAB_NB_REPEAT", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "fastest at" in text and "brk moved" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4      # bar, latency, sweep, ipc latency
    assert [p for p in tmp_path.iterdir() if p.name.startswith("fastio-lab-")] == []
