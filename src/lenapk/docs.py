"""``python -m lenapk.docs [path]``: write the flagship model's ``docs/model.md`` (default path)
from the code; rerun after changing a parameter or the calibration."""

from __future__ import annotations

import sys
from pathlib import Path

from .models.cll._docs import render


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else Path("docs/model.md")
    path.write_text(render(path.parent / "calibration.md"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
