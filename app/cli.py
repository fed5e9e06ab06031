"""The `vidarena` command line (Typer). Thin: parse arguments, call services, print results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.config import Settings, get_settings

EXAMPLE_STUDY = (
    Path(__file__).resolve().parent.parent / "examples/lightning-vs-animatediff/study.toml"
)

app = typer.Typer(
    help="vidarena: blind human evaluation of text-to-video diffusion pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
study_app = typer.Typer(help="Create and list studies.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(study_app, name="study")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def ensure_schema(settings: Settings) -> None:
    """Migrate the embedded SQLite default automatically; ask for it explicitly elsewhere."""
    from app.db import get_engine, pending_migrations, upgrade_schema

    try:
        pending = pending_migrations(get_engine(settings))
    except Exception as exc:
        raise fail(f"cannot reach the database {_safe_url(settings)}: {exc}") from exc
    if not pending:
        return
    if settings.is_sqlite:
        upgrade_schema(settings.database_url)
        return
    raise fail(
        f"the database {_safe_url(settings)} needs migrations {', '.join(pending)}: "
        "run `vidarena db upgrade` first"
    )


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the newest) to VIDARENA_DATABASE_URL."""
    from app.db import upgrade_schema

    settings = get_settings()
    try:
        upgrade_schema(settings.database_url, revision)
    except Exception as exc:
        raise fail(f"migration failed on {_safe_url(settings)}: {exc}") from exc
    typer.echo(f"database {_safe_url(settings)} is at {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")],
) -> None:
    """Undo migrations down to REVISION."""
    from app.db import downgrade_schema

    settings = get_settings()
    downgrade_schema(settings.database_url, revision)
    typer.echo(f"database {_safe_url(settings)} is at {revision}")


@study_app.command("create")
def study_create(
    study_file: Annotated[
        Path, typer.Argument(help="TOML study file; its `prompts` path is read relative to it.")
    ],
) -> None:
    """Create a study from a study file and its prompts CSV; prints the new study's slug."""
    from app.db import session_scope
    from app.studies import service as studies_service
    from app.studies.studyfile import StudyFileError, load_study_file

    settings = get_settings()
    try:
        draft = load_study_file(study_file)
    except StudyFileError as exc:
        raise fail(str(exc), code=2) from exc
    ensure_schema(settings)
    try:
        with session_scope() as session:
            study = studies_service.create(session=session, draft=draft)
            slug = study.slug
    except studies_service.StudyExistsError as exc:
        raise fail(str(exc), code=2) from exc
    typer.echo(slug)
    typer.secho(
        f"created {draft.name!r}: {len(draft.arms)} arms, {len(draft.prompts)} prompts, "
        f"{len(draft.themes)} themes",
        err=True,
    )


@study_app.command("list")
def study_list() -> None:
    """List studies: slug, status, arms, prompts, name."""
    from app.db import session_scope
    from app.studies import service as studies_service

    ensure_schema(get_settings())
    with session_scope(read_only=True) as session:
        studies = studies_service.list_studies(session=session)
        if not studies:
            typer.echo("no studies yet: `vidarena study create STUDY_FILE` makes one")
            return
        typer.echo(f"{'slug':<32} {'status':<10} {'arms':>4} {'prompts':>7}  name")
        for study in studies:
            n = studies_service.counts(session=session, study=study)
            typer.echo(
                f"{study.slug:<32} {study.status.value:<10} {n['arms']:>4} {n['prompts']:>7}  "
                f"{study.name}"
            )


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the web app (evaluators, admin, dashboards) with uvicorn."""
    import uvicorn

    settings = get_settings()
    ensure_schema(settings)
    password = settings.resolved_admin_password()
    typer.echo(f"vidarena on http://{host}:{port}/  admin: http://{host}:{port}/admin/")
    if settings.admin_password is None:
        typer.echo(
            f"admin password (generated, kept in {settings.var_dir}/admin_password): {password}"
        )
    uvicorn.run(
        "app.main:create_app", factory=True, host=host, port=port, workers=workers, log_level="info"
    )


def main() -> None:  # pragma: no cover - console entry point
    app()


@app.command("demo")
def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Migrate, create the example study (once) and serve it on the embedded default."""
    from app.db import session_scope
    from app.studies import service as studies_service
    from app.studies.studyfile import load_study_file

    settings = get_settings()
    ensure_schema(settings)
    draft = load_study_file(EXAMPLE_STUDY)
    with session_scope() as session:
        try:
            studies_service.create(session=session, draft=draft)
            typer.echo(f"created the example study {draft.slug!r}")
        except studies_service.StudyExistsError:
            typer.echo(f"the example study {draft.slug!r} is already there")
    serve(host=host, port=port, workers=1)
