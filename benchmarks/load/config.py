"""Per-run secrets (fresh each run; nothing outside uses them) and the constants every part of the
load benchmark shares."""

from __future__ import annotations

import uuid

SECRET_KEY = "load-benchmark-" + uuid.uuid4().hex  # fresh per run; nothing outside uses it
ADMIN_PASSWORD = "load-benchmark-admin-" + uuid.uuid4().hex[:8]
METRICS_TOKEN = "load-benchmark-metrics-" + uuid.uuid4().hex[:8]
QUOTA = 20  # the example study's trials_per_evaluator
EVALUATORS_PER_CLIENT = 25  # httpcore's pool scans every connection per request: keep pools small
FLOOR_ITEMS = 1000
CHOICES = ("left", "right", "tie")
