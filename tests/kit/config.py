"""Settings for tests: validated copies, and an environment free of the developer's own
VIDARENA_* variables for processes the tests start."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.config import Settings


def configured(settings: Settings, **update: Any) -> Settings:
    """A validated copy (model_copy(update=…) would skip validation: plain str secrets)."""
    return type(settings).model_validate(settings.model_dump() | update)


def env_without_vidarena() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VIDARENA_")}
