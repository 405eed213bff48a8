"""Every CLI's --help gives each flag a help text that shows its default (issue 23)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIS = ["demo_data.py", "pipeline.py", "train_model.py", "evaluate.py", "predict.py", "download_bucket.py"]


def option_blocks(text: str) -> dict[str, str]:
    """{--flag: its help text} from argparse's "options:" section."""
    body = text.split("options:", 1)[1]
    blocks, cur = {}, None
    for line in body.splitlines():
        m = re.match(r"^  (-\w, )?(--[\w-]+)", line)
        if m:
            cur = m.group(2)
            blocks[cur] = line[m.end():]
        elif cur and line.startswith("    "):
            blocks[cur] += " " + line.strip()
    return blocks


@pytest.mark.parametrize("cli", CLIS)
def test_every_flag_has_help_and_shows_its_default(cli):
    r = subprocess.run([sys.executable, cli, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    blocks = option_blocks(r.stdout)
    assert len(blocks) >= 4
    for flag, text in blocks.items():
        if flag == "--help":
            continue
        words = re.sub(r"^\s*[A-Z_{},|]+\s", " ", text)  # drop the metavar
        assert len(words.split()) >= 3, f"{cli} {flag} has no help text: {text!r}"
        assert "default" in text, f"{cli} {flag} does not show its default: {text!r}"
