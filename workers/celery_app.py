"""The render workers' Celery app: the shared factory (app/broker.py) with the task module."""

from __future__ import annotations

from app.broker import make_celery

celery_app = make_celery(include=["workers.tasks"])
