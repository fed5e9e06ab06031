"""Where things are: the repository root and the founding example study."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE_STUDY = ROOT / "examples" / "lightning-vs-animatediff" / "study.toml"
