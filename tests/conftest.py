"""Shared test fixtures: paths and a small, session-cached demo data set.

Real third-party data used by the tests is copied into tests/fixtures/ (see its README), so the
suite never depends on anything outside the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def demo_tree(tmp_path_factory) -> dict:
    """A 6-day, one-trader momentum demo set in the R2 layout, generated once per session.

    Returns {"data_dir": Path, "truth_dir": Path, "summary": dict}. Tests must not modify it:
    copy it first (shutil.copytree) when they need to.
    """
    from demo_data import DemoConfig, run

    root = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(
        out=str(root / "merged_trades"),
        days=6,
        traders=1,
        strategy="momentum",
        seed=0,
        truth_dir=str(root / "demo_truth"),
    )
    summary = run(cfg)
    return {"data_dir": root / "merged_trades", "truth_dir": root / "demo_truth", "summary": summary}
