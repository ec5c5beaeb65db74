"""The example notebook, executed headless as a reader would run it (nbclient, a fresh kernel of this
environment), and its inline viewer rendered in Chromium as the viewer's browser tests do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "attention_matrix.ipynb"
BROWSER = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def test_example_notebook_runs_and_shows_the_matrix_view(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the `test` extra (nbformat, nbclient, ipykernel)")
    nbclient = pytest.importorskip("nbclient", reason="the `test` extra (nbformat, nbclient, ipykernel)")
    pytest.importorskip("transformers", reason="the notebook runs a transformers model (torch + transformers)")
    for need, what in ((shutil.which("node"), "node"), (Path(CHROMIUM).is_file(), CHROMIUM),
                       ((BROWSER / "node_modules" / "playwright-core").is_dir(), "tests/browser/node_modules (npm ci)")):
        if not need:
            pytest.fail(f"the browser check needs {what} (scripts/test.sh installs it)")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The notebook writes its dataset under the working directory: a temporary one here.
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    # The summary table: one row per imported head (2 layers x 12 heads), hit@3 and the ceiling.
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}) and "<table" in o["data"]["text/html"]]
    assert tables and "tsne_2d_hit_at_3" in tables[-1] and "ceiling_2d_hit_at_3" in tables[-1]
    views = [o["data"]["text/html"] for o in outputs if 'class="attnviz-viewer"' in o.get("data", {}).get("text/html", "")]
    assert len(views) == 1
    page = tmp_path / "notebook-output.html"
    page.write_text(f"<!doctype html><html><body><h1>notebook output</h1>{views[0]}</body></html>", encoding="utf-8")
    shots = Path(os.environ.get("CARGO_TARGET_DIR", tmp_path)) / "viewer-screenshots" / "notebook"
    r = subprocess.run(["node", str(BROWSER / "viewer.mjs"), "notebook", page.as_uri(), str(shots)],
                       capture_output=True, text=True, timeout=300)
    seen = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    assert r.returncode == 0 and seen.get("ok"), r.stdout + r.stderr
    assert seen["pageErrors"] == []
    assert seen["cells"] == 24
    assert 640 <= seen["frame_height"] <= 642  # the height asked for, and the frame's border
    # Every cell of the Matrix View has points drawn.
    assert len(seen["cell_ink"]) == 24 and min(seen["cell_ink"]) > 20, seen["cell_ink"]
    assert seen["single_points"] > 0 and seen["single_title"].startswith(seen["clicked_head"])
