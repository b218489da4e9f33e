"""Documentation and examples never rot: docs/model.md is what the code renders, examples run."""

import subprocess
import sys
from pathlib import Path

from lenapk.docs import render_model_doc

ROOT = Path(__file__).resolve().parents[1]


def test_model_doc_generated_from_code():
    on_disk = (ROOT / "docs" / "model.md").read_text()
    rendered = render_model_doc(ROOT / "docs" / "calibration.md")
    assert on_disk == rendered, "docs/model.md is stale: run `python -m lenapk.docs`"


def test_quickstart_example_runs(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path), "--cycles", "2"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "ANC nadir" in res.stdout
    assert (tmp_path / "trajectories.png").stat().st_size > 10_000
