"""The `vidarena` command line (Typer). Thin: parse arguments, call services, print results.

One module on purpose (longer than most): every command is a few lines over a service, and
`vidarena --help` lists them from here; each imports what it needs when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.config import Settings, get_settings
from app.text import plural, visible

if TYPE_CHECKING:  # imported where used, so that each command loads only what it needs
    import subprocess

    from sqlalchemy.orm import Session

    from app.exports.service import Kind
    from app.studies.models import Study
    from app.studies.studyfile import StudyFileError

EXAMPLE_STUDY = (
    Path(__file__).resolve().parent.parent / "examples/lightning-vs-animatediff/study.toml"
)
# The example study made small for `vidarena demo`: 20 of its prompts, 8 frames.
DEMO_STUDY = Path(__file__).resolve().parent.parent / "examples/demo/study.toml"

app = typer.Typer(
    help="vidarena: blind human evaluation of text-to-video diffusion pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
study_app = typer.Typer(help="Create and list studies.", no_args_is_help=True)
clips_app = typer.Typer(
    help="Clips rendered elsewhere, and the clips' measures.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(study_app, name="study")
app.add_typer(clips_app, name="clips")
export_app = typer.Typer(
    help="Export a study's votes, clips or statistics as spreadsheet-safe CSV.",
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")
audit_app = typer.Typer(
    help="Check what a study's evaluators could tell apart.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(visible(message, keep="\n"), err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def inert_console(**options: Any) -> Any:
    """A rich Console for text from the database: names like `[bold]` print as written (no
    markup, emoji codes or highlighting), and control and direction characters as escapes."""
    from rich.console import Console
    from rich.text import Text

    class InertConsole(Console):
        def render_str(self, text: str, **kwargs: Any) -> Text:
            return super().render_str(visible(text, keep="\n"), **kwargs)

    return InertConsole(markup=False, emoji=False, highlight=False, **options)


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


def _study_or_exit(session: Session, slug: str) -> Study:
    """The study with this slug, or exit 2 with the message saying how to list studies."""
    from app.studies import service as studies_service

    try:
        return studies_service.get_by_slug(session=session, slug=slug)
    except studies_service.StudyNotFoundError as exc:
        raise fail(str(exc), code=2) from exc


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
                f"{visible(study.slug):<32} {study.status.value:<10} {n['arms']:>4} "
                f"{n['prompts']:>7}  {visible(study.name)}"
            )


@study_app.command("plan")
def study_plan(
    slug: Annotated[str, typer.Argument(help="The study whose analysis plan changes.")],
    study_file: Annotated[
        Path,
        typer.Argument(
            help="TOML file with the new [analysis] table (the study file itself will do; its "
            "other tables are not read; no [analysis] table: the defaults)."
        ),
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why the plan changes, kept with the change.")
    ] = "",
) -> None:
    """Replace a study's analysis plan. Once the study has opened the plan is locked: a change
    is still made, and kept with its time (shown on the study page, the dashboard, the report)."""
    from app.db import session_scope
    from app.studies import service as studies_service
    from app.studies.studyfile import StudyFileError, decode_utf8, parse_analysis

    ensure_schema(get_settings())
    try:
        text = decode_utf8(study_file.read_bytes(), study_file.name)
    except OSError as exc:
        raise fail(f"{study_file.name}:1:1: cannot read file: {exc.strerror}", code=2) from exc
    except StudyFileError as exc:
        raise fail(_plan_problems(exc), code=2) from exc
    with session_scope() as session:
        study = _study_or_exit(session, slug)
        try:
            spec = parse_analysis(
                toml_text=text,
                toml_name=study_file.name,
                criteria=study.criterion_keys,
                arms=[arm.name for arm in study.arms],
            )
        except StudyFileError as exc:
            raise fail(_plan_problems(exc), code=2) from exc
        if spec == studies_service.analysis_spec(study):
            typer.echo(f"the analysis plan of {visible(slug)!r} is unchanged")
            return
        change = studies_service.set_analysis(
            session=session, study=study, spec=spec, reason=reason.strip()
        )
        if change is None:
            typer.echo(f"changed the analysis plan of {visible(slug)!r} (not locked yet)")
        else:
            when = f"{change.changed_at:%Y-%m-%d %H:%M:%S} UTC"
            locked = f"{study.analysis_locked_at:%Y-%m-%d %H:%M:%S} UTC"
            typer.echo(
                f"changed the analysis plan of {visible(slug)!r} at {when}, after its lock "
                f"({locked}): the change is kept with its time and shown with the plan"
            )


def _plan_problems(exc: StudyFileError) -> str:
    lines = "\n".join(f"  {p}" for p in exc.problems)
    return f"{plural(len(exc.problems), 'problem')} in the plan; nothing was changed:\n{lines}"


@clips_app.command("import")
def clips_import(
    slug: Annotated[str, typer.Argument(help="The study the clips belong to.")],
    manifest: Annotated[
        Path,
        typer.Argument(
            help="CSV with columns prompt, arm, path (paths relative to it); optional cost "
            "columns total_s, denoise_s, denoiser_passes, device, peak_memory_bytes."
        ),
    ],
    replace: Annotated[
        bool,
        typer.Option(help="Replace done clips (never one evaluators were given in a trial)."),
    ] = False,
) -> None:
    """Import GIFs rendered elsewhere; every bad row is reported and nothing is stored."""
    from app.clips.importer import import_manifest
    from app.db import session_scope
    from app.storage import get_storage
    from app.studies.studyfile import StudyFileError

    settings = get_settings()
    ensure_schema(settings)
    try:
        with session_scope() as session:
            study = _study_or_exit(session, slug)
            count = import_manifest(
                session=session,
                study=study,
                manifest=manifest,
                storage=get_storage(settings),
                replace=replace,
            )
    except StudyFileError as exc:
        raise fail(str(exc), code=2) from exc
    typer.echo(f"imported {count} clip(s) into {slug!r}")


@clips_app.command("measure")
def clips_measure(
    slug: Annotated[str, typer.Argument(help="The study whose clips to measure.")],
    force: Annotated[bool, typer.Option(help="Measure every done clip again.")] = False,
) -> None:
    """Measure the study's done clips (motion, flicker, sharpness, colourfulness) that lack a
    measure or hold an older version of one; the worker and the importer measure new clips."""
    from app.clips import service as clips_service
    from app.db import get_engine, session_factory
    from app.storage import get_storage

    settings = get_settings()
    ensure_schema(settings)
    # A plain session: the backfill commits clip by clip.
    with session_factory(get_engine(settings))() as session:
        study = _study_or_exit(session, slug)
        result = clips_service.backfill_measures(
            session=session,
            study=study,
            storage=get_storage(settings),
            force=force,
            on_clip=lambda done, total: typer.echo(f"measured {done}/{total}", err=True),
        )
    for clip_id, why in result.failed.items():
        typer.secho(f"clip {clip_id}: {visible(why)}", err=True, fg=typer.colors.RED)
    typer.echo(
        f"measured {plural(result.measured, 'clip')} of {result.to_measure} to measure in {slug!r}"
    )
    if result.failed:
        raise fail(f"{plural(len(result.failed), 'clip')} could not be measured")


@app.command("invite")
def invite(
    slug: Annotated[str, typer.Argument(help="The study's slug (`vidarena study list`).")],
    count: Annotated[int, typer.Option(help="How many invite links to print.", min=1)] = 1,
    base_url: Annotated[
        str, typer.Option(help="Public address of the web app, as evaluators will reach it.")
    ] = "http://127.0.0.1:8000",
) -> None:
    """Print COUNT personal invite links for a study, one per line (one link, one evaluator)."""
    from app.db import session_scope
    from app.rating import enrollment
    from app.studies.models import StudyStatus

    settings = get_settings()
    ensure_schema(settings)
    if count > 10_000:
        raise fail(f"--count {count} is too many: at most 10000 per call", code=2)
    secret = settings.resolved_secret_key()
    with session_scope(read_only=True) as session:
        study = _study_or_exit(session, slug)
        links = enrollment.new_invites(secret=secret, study=study, count=count, base_url=base_url)
        study_link = enrollment.study_link(secret=secret, study=study, base_url=base_url)
        status, spec = study.status, enrollment.rating_spec(study)
    for link in links:
        typer.echo(link)
    admission = "open enrollment" if spec.open_enrollment else "invitation only: refused alone"
    typer.secho(
        f"study link ({admission}; a participant id goes in ?{spec.external_id_param}=): "
        f"{study_link}",
        err=True,
    )
    if status != StudyStatus.open:
        typer.secho(
            f"note: the study is {status.value}; the links work once it is open",
            err=True,
            fg=typer.colors.YELLOW,
        )


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    render_worker: Annotated[
        bool | None,
        typer.Option(
            "--render-worker/--no-render-worker",
            help="Run a render worker as a child process (default: on with the embedded broker).",
        ),
    ] = None,
) -> None:
    """Serve the web app (evaluators, admin, dashboards) with uvicorn."""
    import uvicorn

    settings = get_settings()
    ensure_schema(settings)
    password = settings.resolved_admin_password()
    typer.echo(f"vidarena on http://{host}:{port}/  admin: http://{host}:{port}/admin/")
    if settings.admin_password is None:
        where = settings.var_dir / "admin_password"
        typer.echo(f"admin password (generated, kept in {where}): {password}")
    embedded = settings.broker_url.startswith("filesystem://")
    child = (
        _start_worker_process() if (embedded if render_worker is None else render_worker) else None
    )
    # X-Forwarded-For and -Proto only from VIDARENA_FORWARDED_ALLOW_IPS (uvicorn's own default
    # believes 127.0.0.1, and its FORWARDED_ALLOW_IPS variable, which this replaces): any local
    # client could otherwise name itself a new address per request, past the rate limits.
    trusted = settings.forwarded_allow_ips.strip()
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted or None,
        )
    finally:
        _stop_process(child)


def _start_worker_process(log: Path | None = None) -> subprocess.Popen[bytes]:
    """A `vidarena worker` child process; its log goes to LOG when given (keeps a progress bar
    readable), else to this terminal."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "app", "worker", "--loglevel", "WARNING"]
    if log is None:
        typer.echo("starting a render worker (child process)")
        return subprocess.Popen(command)  # noqa: S603 - our interpreter, fixed arguments
    log.parent.mkdir(parents=True, exist_ok=True)
    typer.echo(f"starting a render worker (child process, log in {log})")
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603


def _stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=20)
    except Exception:
        process.kill()


@app.command("worker")
def worker(
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    hostname: Annotated[
        str | None, typer.Option(help="Worker name, e.g. gpu0@%h (default: celery@host).")
    ] = None,
) -> None:
    """Run one render worker: one process rendering one clip at a time on its GPU while its
    encoder processes (VIDARENA_ENCODE_WORKERS) finish the clips before (start one per GPU,
    choosing it with CUDA_VISIBLE_DEVICES)."""
    settings = get_settings()
    ensure_schema(settings)
    from app.broker import RENDER_QUEUE

    # The one upward import of the app (named in pyproject's import contract): this command runs
    # a render worker in this process, so it starts the workers' own Celery app.
    from workers.celery_app import celery_app

    argv = ["worker", f"--loglevel={loglevel}", "--pool=solo", "--concurrency=1"]
    argv += [f"--queues={RENDER_QUEUE}", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app.worker_main(argv)


@app.command("render")
def render(
    slug: Annotated[str, typer.Argument(help="The study to render.")],
    tiny: Annotated[
        bool, typer.Option(help="Use tiny random-weight models (demos, tests; no downloads).")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Show progress until every clip is done.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Queue failed clips only.")
    ] = False,
    with_worker: Annotated[
        bool, typer.Option(help="Run a render worker in a child process while waiting.")
    ] = False,
) -> None:
    """Queue every missing clip of a study (one render task per prompt x arm, prompt by
    prompt); a draft study moves to rendering."""
    from app.clips.dispatch import queue_renders
    from app.clips.service import QueueUnavailableError
    from app.db import session_scope

    settings = get_settings()
    ensure_schema(settings)
    action = "retry_failed" if retry_failed else "missing"
    with session_scope() as session:
        study = _study_or_exit(session, slug)
        try:
            ids, _ = queue_renders(
                session=session, settings=settings, study=study, action=action, tiny=tiny
            )
        except QueueUnavailableError as exc:
            raise fail(str(exc), code=3) from exc
    typer.echo(f"queued {len(ids)} clip(s) of {slug!r}{' with tiny models' if tiny else ''}")
    if wait:
        log = settings.var_dir / "render-worker.log"
        child = _start_worker_process(log) if with_worker else None
        try:
            failed = _wait_for_renders(slug)
        finally:
            _stop_process(child)
        if failed:
            raise fail(f"{failed} clip(s) failed: see the study page or `vidarena render --help`")


def _wait_for_renders(slug: str) -> int:
    """A progress bar per arm until nothing is queued or rendering; returns failed clips."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from app.clips import service as clips_service
    from app.db import session_scope

    def snapshot() -> list[clips_service.ArmProgress]:
        with session_scope(read_only=True) as session:
            study = _study_or_exit(session, slug)
            return clips_service.progress(session=session, study=study)

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as bar:
        tasks = {a.arm: bar.add_task(a.arm, total=a.total, detail="") for a in snapshot()}
        while True:
            arms = snapshot()
            for arm in arms:
                steps = ", ".join(f"step {r['step']}/{r['total']}" for r in arm.rendering)
                eta = f"ETA {arm.eta_seconds:.0f} s" if arm.eta_seconds else ""
                failed = arm.counts.get("failed", 0)
                detail = " ".join(
                    x for x in (steps, eta, f"{failed} failed" if failed else "") if x
                )
                bar.update(tasks[arm.arm], completed=arm.done, detail=detail)
            if not any(a.counts.get("queued", 0) + a.counts.get("rendering", 0) for a in arms):
                return sum(a.counts.get("failed", 0) for a in arms)
            time.sleep(0.5)


@app.command("demo")
def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Migrate, create the demo study (examples/demo: the example study made small), render it
    with tiny models in the background, open it for rating and serve it (what `make run`
    calls)."""
    from app.clips import service as clips_service
    from app.clips.dispatch import send_renders
    from app.db import session_scope
    from app.rating import matchups
    from app.studies import service as studies_service
    from app.studies.models import StudyStatus
    from app.studies.studyfile import load_study_file

    settings = get_settings()
    ensure_schema(settings)
    # The worker first: importing torch takes it a while, which overlaps the rest of the setup
    # and the web server's start.
    child = _start_worker_process()
    try:
        draft = load_study_file(DEMO_STUDY)
        with session_scope() as session:
            try:
                study = studies_service.create(session=session, draft=draft)
                typer.echo(f"created the demo study {draft.slug!r}")
            except studies_service.StudyExistsError:
                study = studies_service.get_by_slug(session=session, slug=draft.slug)
                typer.echo(f"the demo study {draft.slug!r} is already there")
            # Prompt by prompt, arms interleaved: the first pair is ratable after two clips.
            ids = clips_service.queue_missing(session=session, study=study, tiny=True)
            # Open at once: pairs become ratable as soon as both clips of a prompt exist.
            if study.status != StudyStatus.open:
                for status in (StudyStatus.rendering, StudyStatus.open):
                    if status in studies_service.TRANSITIONS[study.status]:
                        matchups.set_study_status(session=session, study=study, status=status)
        send_renders(settings=settings, clips=[(i, True) for i in ids])
        typer.echo(f"rendering {len(ids)} clip(s) with tiny models in the background")
        _print_demo_invites(settings, slug=draft.slug, base_url=f"http://{host}:{port}")
        serve(host=host, port=port, workers=1, render_worker=False)
    finally:
        _stop_process(child)


def _print_demo_invites(settings: Settings, *, slug: str, base_url: str) -> None:
    """Rating links for trying the study at once: pairs appear as both clips of a prompt finish."""
    from app.db import session_scope
    from app.rating import enrollment

    with session_scope(read_only=True) as session:
        study = _study_or_exit(session, slug)
        links = enrollment.new_invites(
            secret=settings.resolved_secret_key(), study=study, count=3, base_url=base_url
        )
    typer.echo("rate blind pairs (one link per evaluator):")
    for link in links:
        typer.echo(f"  {link}")


# --- results: exports and the report ---------------------------------------------------------

SlugArgument = Annotated[str, typer.Argument(help="The study's slug (`vidarena study list`).")]
OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="File to write (default: standard output)."),
]
ExcludeFlaggedTrials = Annotated[bool, typer.Option(help="Leave out flagged trials.")]
ExcludeFlaggedEvaluators = Annotated[
    bool, typer.Option(help="Leave out evaluators with >= 20% of their trials flagged.")
]
ExcludeTies = Annotated[bool, typer.Option(help="Leave out tie votes.")]
FocusArm = Annotated[
    str | None, typer.Option("--arm", help="Report win rates of this arm (default: the fastest).")
]
Margin = Annotated[
    float | None,
    typer.Option(help="Non-inferiority margin in percentage points, e.g. 5.", min=0, max=49.9),
]


def _write_export(slug: str, kind: Kind, output: Path | None, filters: Any = None) -> None:
    """Stream one export to OUTPUT (with a byte-order mark, for spreadsheets) or stdout."""
    import sys

    from app.db import session_scope
    from app.exports import service as exports_service

    ensure_schema(get_settings())
    with session_scope(read_only=True) as session:
        study = _study_or_exit(session, slug)
        chunks = exports_service.export_chunks(
            session=session, study=study, kind=kind, filters=filters, bom=output is not None
        )
        if output is None:
            sys.stdout.writelines(chunks)
            return
        with output.open("w", encoding="utf-8", newline="") as file:
            file.writelines(chunks)
    typer.secho(f"wrote {output}", err=True)


def _filters(**options: Any) -> Any:
    from app.dashboard.schemas import Filters

    return Filters(**options)


@export_app.command("votes")
def export_votes(slug: SlugArgument, output: OutputOption = None) -> None:
    """One row per vote: trial, evaluator, prompt, theme, criterion, the arms shown left and
    right, choice, winner, clips, times, response time and flags. Streams any size."""
    _write_export(slug, "votes", output)


@export_app.command("clips")
def export_clips(slug: SlugArgument, output: OutputOption = None) -> None:
    """The render manifest: one row per clip with prompt, theme, seed, arm, every pipeline
    setting, storage key, sha256, size, frames and the render telemetry."""
    _write_export(slug, "clips", output)


@export_app.command("summary")
def export_summary(
    slug: SlugArgument,
    output: OutputOption = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv or json (default: json for a .json file, else csv)."),
    ] = None,
    exclude_flagged_trials: ExcludeFlaggedTrials = False,
    exclude_flagged_evaluators: ExcludeFlaggedEvaluators = False,
    exclude_ties: ExcludeTies = False,
    arm: FocusArm = None,
    margin: Margin = None,
) -> None:
    """Every statistic (win rates with intervals and tests, per theme, power, position bias,
    Bradley-Terry, bootstrap, agreement, evaluator quality, render cost) as CSV or JSON."""
    fmt = fmt or ("json" if output is not None and output.suffix == ".json" else "csv")
    if fmt not in ("csv", "json"):
        raise fail(f"--format must be csv or json, not {fmt!r}", code=2)
    filters = _filters(
        exclude_flagged_trials=exclude_flagged_trials,
        exclude_flagged_evaluators=exclude_flagged_evaluators,
        exclude_ties=exclude_ties,
        arm=arm,
        margin=margin,
    )
    _write_export(slug, "summary" if fmt == "csv" else "summary.json", output, filters)


@app.command("report")
def report(
    slug: SlugArgument,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")
    ] = None,
    exclude_flagged_trials: ExcludeFlaggedTrials = False,
    exclude_flagged_evaluators: ExcludeFlaggedEvaluators = False,
    exclude_ties: ExcludeTies = False,
    arm: FocusArm = None,
    margin: Margin = None,
) -> None:
    """Print the per-criterion results table (and, when clips are measured, the preference with
    the measures held equal); --html FILE writes the full report (charts, tables, bootstrap,
    agreement, clip measures) as one file to attach to a paper."""
    import sys

    from app.dashboard import service as dashboard_service
    from app.db import session_scope
    from app.exports import report as report_service

    ensure_schema(get_settings())
    filters = _filters(
        exclude_flagged_trials=exclude_flagged_trials,
        exclude_flagged_evaluators=exclude_flagged_evaluators,
        exclude_ties=exclude_ties,
        arm=arm,
        margin=margin,
    )
    with session_scope(read_only=True) as session:
        study = _study_or_exit(session, slug)
        d, a = dashboard_service.full(session=session, study=study, filters=filters)
    console = inert_console(width=None if sys.stdout.isatty() else 120)
    for table in report_service.terminal_tables(d):
        console.print(table)
    adjusted = report_service.adjusted_table(d, a)
    if adjusted is not None:
        console.print(adjusted)
    console.print(report_service.NOTE, style="dim")
    for warning in d.summary.warnings[2:]:
        console.print(warning, style="yellow")
    if html is not None:
        html.write_text(report_service.html(d, a), encoding="utf-8")
        typer.secho(f"wrote {html}", err=True)


@audit_app.command("blinding")
def audit_blinding(
    slug: SlugArgument,
    unpadded: Annotated[
        bool,
        typer.Option(help="Audit the clips as they would be served without the padding."),
    ] = False,
    folds: Annotated[int, typer.Option(help="Cross-validation folds (of prompts).", min=2)] = 10,
) -> None:
    """Predict which arm is on which side of each matchup from what an evaluator observes
    without judging the pixels (served bytes, size, frames, duration, palette, response time):
    cross-validated accuracy per feature and all together; chance is 50%. The last line names
    the accuracy (docs/blinding.md)."""
    import sys

    from rich.table import Table

    from app.analysis.blinding import interval_text, summary_line
    from app.db import session_scope
    from app.rating import audit
    from app.storage import get_storage

    settings = get_settings()
    ensure_schema(settings)
    with session_scope(read_only=True) as session:
        study = _study_or_exit(session, slug)
        result = audit.blinding_audit(
            session=session,
            study=study,
            storage=get_storage(settings),
            padded=not unpadded,
            folds=folds,
        )
    console = inert_console(width=None if sys.stdout.isatty() else 120)
    served = "as they would be served without padding" if unpadded else "as served"
    table = Table(
        title=f"Blinding audit of {slug}: clips {served}, {plural(result.n_matchups, 'matchup')} "
        f"of {plural(result.n_prompts, 'prompt')}, {result.folds}-fold cross-validation by prompt"
    )
    for column in ("observed", "accuracy", "95% CI", "permutation p"):
        table.add_column(column, justify="left" if column == "observed" else "right")
    for row in result.rows if result.enough else ():
        p_value = "" if row.p_value is None else f"{row.p_value:.3f}"
        table.add_row(row.label, f"{100 * row.accuracy:.1f}%", interval_text(row), p_value)
    if result.enough:
        console.print(table)
    typer.echo(summary_line(result))


def main() -> None:  # pragma: no cover - console entry point
    app()
