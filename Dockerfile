# syntax=docker/dockerfile:1
# The vidarena web app (FastAPI under uvicorn) and the `migrate` one-shot. No torch: the web app
# sends render tasks by name and never imports the pipelines (see Dockerfile.worker for those).
#
#   docker build -t vidarena-web .
#   docker run --env-file my.env -p 8000:8000 vidarena-web
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIDARENA_VAR_DIR=/var/lib/vidarena

RUN groupadd --system --gid 10001 vidarena \
 && useradd --system --uid 10001 --gid vidarena --home-dir /app --shell /usr/sbin/nologin vidarena \
 && install -d -o vidarena -g vidarena /var/lib/vidarena

WORKDIR /app
# Dependencies first, in their own layer: rebuilt only when pyproject.toml changes. The editable
# install keeps templates/, static/ and migrations/ beside the code, where the app looks for them.
COPY pyproject.toml README.md ./
RUN mkdir app workers && touch app/__init__.py workers/__init__.py \
 && pip install -e . \
 && rm -rf app workers
COPY alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY examples ./examples

USER vidarena
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Behind a reverse proxy, set VIDARENA_FORWARDED_ALLOW_IPS to its address: no X-Forwarded-For is
# believed otherwise (every client is the peer address).
# Migrations are applied by the compose `migrate` service (`vidarena db upgrade`) before this
# starts; `serve` refuses to start on a PostgreSQL schema that is behind.
CMD ["vidarena", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "4", "--no-render-worker"]
