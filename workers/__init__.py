"""Render workers: the Celery app, its tasks and the render pipelines (the only torch users)."""
