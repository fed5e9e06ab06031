"""Every table of the app, registered on `Base.metadata`: what Alembic compares migrations with
and what tests create and empty. Above every domain's models (nothing in `app/` imports it)."""

from __future__ import annotations

from sqlalchemy import MetaData

from app.auth import models as auth_models
from app.clips import models as clips_models
from app.db import Base
from app.rating import models as rating_models
from app.studies import models as studies_models

DOMAIN_MODELS = (studies_models, clips_models, rating_models, auth_models)
metadata: MetaData = Base.metadata

__all__ = ["DOMAIN_MODELS", "metadata"]
