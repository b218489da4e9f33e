"""``docs/model.md`` of the lenalidomide-CLL model, rendered from its declarations (a test checks
that the file in the repository is what this renders, so the document cannot drift)."""

from __future__ import annotations

from pathlib import Path

from ...report import render_model_doc
from ._model import LenalidomideCLL

NOTES = """
- Response is judged on blood lymphocytes only (iwCLL 2008 blood criteria approximated by the ALC;
  no nodes, spleen or marrow).  ALC = clone + a constant non-clonal lymphocyte count.
- Drug effects on granulopoiesis and thrombopoiesis act on proliferation (Friberg); the IMiD
  maturation block is not modelled separately.
- Tumour flare, tumour lysis and infections are not modelled.
- PK absorption is first order (the brief's simpler acceptable structure) rather than Hughes'
  transit chain; the transit-rate variability is used for ka.
"""


def render(calibration_doc: Path | None = None) -> str:
    """The text of ``docs/model.md``; ``calibration_doc``: the ``docs/calibration.md`` whose
    fit-quality tables it includes."""
    return render_model_doc(
        LenalidomideCLL(),
        title="The lenalidomide-CLL model",
        generated_by="python -m lenapk.docs",
        calibration_doc=calibration_doc,
        notes=NOTES,
    )
