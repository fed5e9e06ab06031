"""The `vidarena` command line run as a user runs it: a real process on a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VIDARENA = [sys.executable, "-m", "app"]


def run(
    *args: str, database_url: str, cwd: Path, secret: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`vidarena ARGS...` in `cwd` (its var folder `cwd/var`) on the database, with the secret
    key given (else none set); output captured as text."""
    env = {
        **os.environ,
        "VIDARENA_DATABASE_URL": database_url,
        "VIDARENA_VAR_DIR": str(cwd / "var"),
    }
    if secret is not None:
        env["VIDARENA_SECRET_KEY"] = secret
    return subprocess.run(
        [*VIDARENA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
