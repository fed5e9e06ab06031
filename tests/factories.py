"""Plain factory helpers: real rows in the real test database, no mocks."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from app.studies import service as studies_service
from app.studies.models import Study
from app.studies.studyfile import load_study_file, parse_study

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_STUDY = ROOT / "examples" / "lightning-vs-animatediff" / "study.toml"

SMALL_STUDY_TOML = """
name = "Small study"
slug = "{slug}"
prompts = "prompts.csv"

[render]
num_frames = 4
width = 64
height = 64
fps = 8

[[arms]]
name = "slow"
kind = "animatediff"
base_model = "emilianJR/epiCRealism"
motion_adapter = "guoyww/animatediff-motion-adapter-v1-5-2"
steps = 2
guidance_scale = 7.5

[[arms]]
name = "fast"
kind = "animatediff-lightning"
base_model = "emilianJR/epiCRealism"
motion_adapter = "ByteDance/AnimateDiff-Lightning"
steps = 1
guidance_scale = 1.0
"""

SMALL_PROMPTS_CSV = "prompt,theme,seed\na red fox running,wildlife,1\na city at night,urban,2\n"


def example_study(session: Session) -> Study:
    study = studies_service.create(session=session, draft=load_study_file(EXAMPLE_STUDY))
    session.commit()
    return study


def small_study(
    session: Session, *, slug: str = "small", prompts_csv: str = SMALL_PROMPTS_CSV
) -> Study:
    draft = parse_study(
        toml_text=SMALL_STUDY_TOML.format(slug=slug),
        toml_name="study.toml",
        prompts_bytes=prompts_csv.encode(),
        prompts_name="prompts.csv",
    )
    study = studies_service.create(session=session, draft=draft)
    session.commit()
    return study
