"""examples/twin.ipynb: it holds the README's notebook lines and runs, on demo artifacts, to the
honest validation score and a plot.

The artifacts are built once for the module in a temp dir: a 14-day one-trader demo, the real
pipeline, and one epoch of train_model.py at the default architecture (the README's
`TraderDecisionTransformer(state_dim=17, action_dim=5)` must load the checkpoint, and its
`torch.randn(1, 128, 17)` needs context 128). The notebook is executed with nbclient from the
repository root, its artifacts named by TWIN_MODEL / TWIN_PARQUET, with a probe cell appended that
prints the notebook's variables as JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "twin.ipynb"
PROBE = """import json
print("PROBE " + json.dumps({
    "predicted_actions": list(predicted_actions.shape), "predicted_rtg": list(predicted_rtg.shape),
    "val_keys": sorted(val_metrics), "honest": honest_metrics, "leaky_n": val_metrics["n"],
    "probs_rows": probs.sum(1).tolist(), "n": n}, default=float))
"""


def readme_notebook_lines() -> list[str]:
    """The code lines of the README's "In a notebook" python block."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## In a notebook"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict:
    """{"model", "parquet"}: a demo checkpoint (default architecture, 1 epoch) and its parquet."""
    import pipeline
    import train_model
    from demo_data import DemoConfig
    from demo_data import run as demo_run

    root = tmp_path_factory.mktemp("twin")
    demo_run(DemoConfig(out=str(root / "trades"), days=14, traders=1, strategy="momentum", seed=0,
                        truth_dir=str(root / "truth")))
    parquet = root / "data" / "processed_trader_data.parquet"
    pipeline.run(pipeline.PipelineConfig(data_dir=str(root / "trades"), output=str(parquet), workers=1))
    train_model.run(train_model.TrainConfig(processed=str(parquet), output_dir=str(root / "models"),
                                            epochs=1, device="cpu"))
    return {"model": root / "models" / "best_model.pt", "parquet": parquet}


def test_notebook_holds_the_readme_lines_and_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for line in readme_notebook_lines():  # verbatim, the two paths taken from the first cell
        line = line.replace("'models/best_model.pt'", "MODEL").replace(
            "'data/processed_trader_data.parquet'", "PARQUET")
        assert line in code.splitlines(), line
    first = nb.cells[[c.cell_type for c in nb.cells].index("code")].source
    assert 'os.environ.get("TWIN_MODEL", "models/best_model.pt")' in first
    assert 'os.environ.get("TWIN_PARQUET", "data/processed_trader_data.parquet")' in first
    for cell in nb.cells:  # committed clean: no stale outputs from someone's run
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_runs_to_the_honest_score_and_a_plot(artifacts, monkeypatch):
    monkeypatch.setenv("TWIN_MODEL", str(artifacts["model"]))
    monkeypatch.setenv("TWIN_PARQUET", str(artifacts["parquet"]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()  # raises on a cell error

    streams = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                      if o["output_type"] == "stream")
    probe = json.loads(streams.split("PROBE ", 1)[1].splitlines()[0])
    assert probe["predicted_actions"] == [1, 128, 5] and probe["predicted_rtg"] == [1, 128]
    assert {"loss", "accuracy", "balanced_accuracy", "macro_f1", "rtg_mae"} <= set(probe["val_keys"])
    # the honest score is the one train_model selected the checkpoint on, so it repeats it
    stored = torch.load(artifacts["model"])["metrics"]["val"]
    honest = probe["honest"]
    assert honest["n"] == stored["n"] == probe["leaky_n"] > 0
    for key in ("macro_f1", "accuracy", "balanced_accuracy", "loss"):
        assert honest[key] == pytest.approx(stored[key], rel=1e-5, abs=1e-9), key
    assert "honest: macro-F1" in streams and "leaky reference: macro-F1" in streams
    assert probe["n"] > 0 and probe["probs_rows"] == pytest.approx([1.0] * probe["n"], abs=1e-5)
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1 and len(images[0]["data"]["image/png"]) > 10_000  # base64 PNG
