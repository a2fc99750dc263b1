"""The demo notebook executes from start to end (short-run settings), every cell without error."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.notebook


def test_demo_notebook_runs_end_to_end(tmp_path, monkeypatch):
  monkeypatch.setenv("UNIMO_DEMO_WORKDIR", str(tmp_path / "demo"))
  monkeypatch.setenv("UNIMO_DEMO_STEPS", "20")
  monkeypatch.setenv("UNIMO_DEMO_PAIRS", "300")
  monkeypatch.setenv("UNIMO_DEMO_VQA_STEPS", "10")
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  nb = nbformat.read(ROOT / "notebooks" / "unimo_demo.ipynb", as_version=4)
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 5  # captions, two retrieval galleries, VQA answers, loss curves
  text = "".join(o.get("text", "") for o in outputs)
  assert "generated:" in text and "accuracy" in text
  assert (tmp_path / "demo" / "pretrain" / "metrics.jsonl").exists()
  assert (tmp_path / "demo" / "vqa" / "answers.json").exists()
