from __future__ import annotations

from pydantic import BaseModel


class RenderingClip(BaseModel):
    clip: int
    step: int
    total: int
    worker: str | None


class ArmProgressOut(BaseModel):
    arm: str
    total: int
    counts: dict[str, int]
    rendering: list[RenderingClip]
    median_seconds: float | None
    eta_seconds: float | None


class RenderProgressOut(BaseModel):
    study: str
    active: bool
    arms: list[ArmProgressOut]
