"""Blinding you can prove (issue 16, part 3): both clips of a trial are served at one size, the
padding leaves every frame as it was, a study file whose arms differ in geometry is refused
unless it says so, and the audit (`vidarena audit blinding`, the dashboard panel) measures what
the bytes and metadata reveal: near 50% with the padding, far above it without."""

from __future__ import annotations

import base64
import io
import itertools
import os
import random
import subprocess
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image, ImageSequence

from app.analysis import blinding
from app.clips.gif import gif_info
from app.rating import audit
from app.rating.padding import (
    MIN_PAD,
    comment_padding,
    matchup_size,
    pad_gif,
    size_class,
    unpad_gif,
)
from app.storage import get_storage
from app.studies.studyfile import StudyFileError, load_study_file, parse_study
from tests.kit.blinding import arm_gif, leaky_study
from tests.kit.cli import VIDARENA
from tests.kit.media import encoded_gif_bytes, gif_bytes, noise_gif_bytes
from tests.kit.paths import EXAMPLE_STUDY
from tests.kit.rating import link
from tests.kit.s3 import running_s3_server, s3_settings
from tests.kit.studies import SMALL_PROMPTS_CSV, SMALL_STUDY_TOML

# --- padding ------------------------------------------------------------------------------------


def frames_of(data: bytes) -> list[bytes]:
    with Image.open(io.BytesIO(data)) as image:
        return [frame.convert("RGBA").tobytes() for frame in ImageSequence.Iterator(image)]


def test_size_classes_are_sixteen_per_octave_and_cost_at_most_a_sixteenth():
    sizes = [*range(0, 5000), *random.Random(1).sample(range(5000, 50_000_000), 5000)]
    for size in sizes:
        padded = size_class(size)
        assert size <= padded <= size * (1 + 1 / 16) + 1
        assert size_class(padded) == padded  # a class is its own class
    octave = {size_class(n) for n in range(2**20 + 1, 2**21 + 1, 97)}
    assert len(octave) == 16 and max(octave) == 2**21  # 16 classes above 1 MiB up to 2 MiB
    assert matchup_size(1000, 4000) == matchup_size(4000, 1000) >= 4000 + MIN_PAD


@pytest.mark.parametrize("count", [*range(MIN_PAD, 600), 65_536, 65_537, 100_003])
def test_comment_padding_has_the_exact_length_and_is_one_valid_extension(count):
    block = comment_padding(count)
    assert len(block) == count and block[:2] == b"\x21\xfe" and block[-1] == 0
    at = 2
    while block[at]:  # sub-blocks of 1..255 zero bytes up to the terminator
        assert not any(block[at + 1 : at + 1 + block[at]])
        at += 1 + block[at]
    assert at == count - 1
    with pytest.raises(ValueError):
        comment_padding(MIN_PAD - 1)


@pytest.mark.parametrize(
    "data",
    [gif_bytes(3), noise_gif_bytes(5), encoded_gif_bytes(7), arm_gif(2, noise=(20, 60))],
    ids=["pillow-bar", "noise", "app-encoder", "arm"],
)
def test_padding_keeps_the_gif_valid_and_its_frames_identical(data):
    info = gif_info(data)
    for extra in (MIN_PAD, 6, 257, 258, 259, 4096, 70_001):
        padded = pad_gif(data, len(data) + extra)
        assert len(padded) == len(data) + extra
        assert frames_of(padded) == frames_of(data)  # Pillow
        assert np.array_equal(iio.imread(padded, index=None), iio.imread(data, index=None))
        again = gif_info(padded)  # the app's own validator: frames, delays, loop unchanged
        for key in ("frames", "width", "height", "duration_ms", "durations_ms", "loop"):
            assert again[key] == info[key]
        assert again["comments"] == info["comments"] + 1
        assert unpad_gif(padded) == data


def test_what_cannot_be_padded_is_served_as_it_is():
    data = gif_bytes(1)
    assert pad_gif(data, len(data) + MIN_PAD - 1) == data  # too little room for a comment
    assert pad_gif(data, len(data) - 10) == data  # a stored size that disagrees
    assert pad_gif(b"\x00" * 100, 500) == b"\x00" * 100  # not a GIF
    assert unpad_gif(data) == data


@pytest.mark.browser
def test_chromium_decodes_a_padded_gif_to_the_same_pixels(chromium_page):
    data = noise_gif_bytes(4, frames=2, size=32)
    padded = pad_gif(data, size_class(len(data) + 5000))
    draw = """async (url) => {
      const image = new Image();
      image.src = url;
      await image.decode();
      const canvas = document.createElement("canvas");
      canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
      const context = canvas.getContext("2d");
      context.drawImage(image, 0, 0);
      return [image.naturalWidth, Array.from(context.getImageData(0, 0, 32, 32).data)];
    }"""
    seen = [
        chromium_page.evaluate(draw, "data:image/gif;base64," + base64.b64encode(gif).decode())
        for gif in (data, padded)
    ]
    assert seen[0][0] == 32 and seen[0] == seen[1]


def test_both_clips_of_every_trial_are_served_at_one_size(client, session, settings):
    study = leaky_study(session, settings, slug="served", prompts=4, evaluators=0)
    base = link(settings, study)
    client.post(f"{base}/api/join", json={})
    sizes = set()
    for _ in range(len(study.prompts) * 3):
        trial = client.get(f"{base}/api/next").json()["trial"]
        if trial is None:
            break
        left, right = client.get(trial["left"]["url"]), client.get(trial["right"]["url"])
        assert left.status_code == right.status_code == 200
        assert len(left.content) == len(right.content) == int(left.headers["content-length"])
        assert unpad_gif(left.content) != unpad_gif(right.content)
        assert len(unpad_gif(left.content)) != len(unpad_gif(right.content))  # arms differ
        assert frames_of(left.content) == frames_of(unpad_gif(left.content))
        assert client.get(trial["left"]["url"]).content == left.content  # same URL, same bytes
        sizes.add(len(left.content))
        votes = dict.fromkeys(study.criterion_keys, "left")
        timing = {"load_seconds": 0.5, "view_seconds": 5.0}
        body = {"votes": votes, "timing": timing}
        client.post(f"{base}/api/trials/{trial['id']}/votes", json=body)
    assert sizes and all(size == size_class(size) for size in sizes)


@pytest.fixture(scope="module")
def s3_endpoint():  # type: ignore[no-untyped-def]
    with running_s3_server("vidarena-blinding") as endpoint_url:
        yield endpoint_url


def test_clips_in_s3_are_padded_alike_even_without_a_recorded_size(session, settings, s3_endpoint):
    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from app.clips.models import Clip
    from app.main import create_app

    s3 = type(settings)(
        **{
            **settings.model_dump(),
            **s3_settings(s3_endpoint, "vidarena-blinding", prefix="pad"),
        }
    )
    study = leaky_study(session, s3, slug="s3-served", prompts=2, arms=2, evaluators=0)
    assert get_storage(s3).__class__.__name__ == "S3Storage"
    # Clips imported before sizes were recorded: the other side's size is asked of S3.
    session.execute(update(Clip).values(size_bytes=None))
    session.commit()
    with TestClient(create_app(s3)) as client:
        base = link(s3, study)
        client.post(f"{base}/api/join", json={})
        trial = client.get(f"{base}/api/next").json()["trial"]
        left, right = client.get(trial["left"]["url"]), client.get(trial["right"]["url"])
    assert left.status_code == right.status_code == 200
    assert len(left.content) == len(right.content) == size_class(len(left.content))
    stored = sorted(len(unpad_gif(r.content)) for r in (left, right))
    assert stored[0] < stored[1] and len(left.content) == matchup_size(*stored)


# --- the statistics -----------------------------------------------------------------------------


def test_logistic_fit_matches_statsmodels_without_penalty():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3))
    y = (rng.random(400) < 1 / (1 + np.exp(-(x @ [1.0, -0.5, 0.0])))).astype(float)
    ours = blinding.fit_logistic(x, y, c=1e12)
    reference = sm.Logit(y, x).fit(disp=0).params
    assert np.allclose(ours, reference, atol=1e-6)


def test_wilson_matches_statsmodels():
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for correct, n in ((0, 10), (5, 10), (37, 60), (60, 60), (12.5, 25)):
        low, high = proportion.proportion_confint(correct, n, alpha=0.05, method="wilson")
        assert np.allclose(blinding.wilson(correct, n), (low, high), atol=1e-9)


def simulated_units(rng, *, n_prompts, signal, pairs=("0-1",)):
    """Matchups of random orientation whose 'served_bytes' difference carries `signal` standard
    deviations of information about the side; the other features are noise or equal."""
    units = []
    for prompt, pair in itertools.product(range(n_prompts), pairs):
        first_left = bool(rng.random() < 0.5)
        bigger = 1.0 if pair == "0-1" else -1.0  # the first arm is bigger in one pair only
        shift = signal * bigger * (1 if first_left else -1) / 2
        left = {f: 0.0 for f in blinding.FEATURES}
        right = dict(left)
        left["served_bytes"], right["served_bytes"] = shift + rng.normal(), -shift + rng.normal()
        left["response_ms"], right["response_ms"] = rng.normal(), rng.normal()
        units.append(blinding.AuditUnit(f"p{prompt}", left, right, first_left, pair))
    return units


def test_the_audit_finds_a_known_leak_and_no_leak_where_there_is_none():
    rng = np.random.default_rng(11)
    null = [
        blinding.audit(simulated_units(rng, n_prompts=40, signal=0.0), permutations=0)
        for _ in range(200)
    ]
    # A false alarm is an interval above 50%: at most 2.5% expected (held-out predictions are
    # not quite independent, so below-chance intervals come more often than 2.5%: see
    # docs/blinding.md); binomial 99.9th percentile of 2.5% of 200: 12.
    assert sum(r.overall.low > 0.5 for r in null) <= 12
    assert abs(np.mean([r.overall.accuracy for r in null]) - 0.5) < 0.03
    # Equal on both sides (width, frames, ...): exactly a coin.
    assert all(row.accuracy == 0.5 for row in null[0].rows if row.feature == "width")
    # A strong leak, with opposite directions in two pairs of arms: found in both.
    leak = blinding.audit(simulated_units(rng, n_prompts=40, signal=4.0, pairs=("0-1", "0-2")))
    assert leak.overall.accuracy > 0.9 and leak.overall.low > 0.8
    bytes_row = next(r for r in leak.rows if r.feature == "served_bytes")
    assert bytes_row.accuracy > 0.9 and leak.n_matchups == 80 and leak.folds == 10
    assert leak.overall.p_value == 1 / (1 + blinding.PERMUTATIONS)  # no flip scores as high
    assert all(row.p_value is None for row in leak.rows[:-1])


def test_the_permutation_p_value_is_valid_without_a_leak():
    rng = np.random.default_rng(5)
    p = np.array(
        [
            blinding.audit(
                simulated_units(rng, n_prompts=30, signal=0.0), permutations=40
            ).overall.p_value
            for _ in range(150)
        ]
    )
    # Valid: P(p <= a) <= a under no leak (binomial slack for 150 studies).
    assert np.mean(p <= 0.05) <= 0.05 + 0.06 and np.mean(p <= 0.25) <= 0.25 + 0.11
    assert np.mean(p <= 0.5) > 0.2  # and not stuck at 1


def test_folds_keep_each_prompt_whole():
    groups = [f"p{i % 7}" for i in range(50)]
    fold_of, k = blinding.grouped_folds(groups, folds=5)
    assert k == 5
    for group in set(groups):
        assert len({f for f, g in zip(fold_of, groups, strict=True) if g == group}) == 1
    assert blinding.grouped_folds(["a", "a"], folds=10)[1] == 1
    assert not blinding.audit([]).enough


# --- the audit of a served study ----------------------------------------------------------------


def steady_clock():
    """A clock that advances 1 ms per reading: every response time equal (see the test)."""
    ticks = itertools.count()
    return lambda: next(ticks) / 1000


def test_audit_of_a_study_with_leaky_bytes_is_at_chance_with_padding_only(session, settings):
    study = leaky_study(session, settings, slug="leaky-audit")
    storage = get_storage(settings)
    # Response times read from a real clock are noise (different each run); a steady clock
    # makes them equal, so the accuracy below is exact: bytes and metadata alone.
    padded = audit.blinding_audit(
        session=session, study=study, storage=storage, clock=steady_clock()
    )
    unpadded = audit.blinding_audit(
        session=session, study=study, storage=storage, padded=False, clock=steady_clock()
    )
    assert padded.n_matchups == unpadded.n_matchups == 36 and padded.n_prompts == 12
    row = {r.feature: r for r in padded.rows}
    assert row["served_bytes"].accuracy == 0.5 and row[blinding.ALL].accuracy == 0.5, padded.rows
    assert padded.overall.low < 0.5 < padded.overall.high and padded.overall.p_value == 1.0
    leaked = {r.feature: r for r in unpadded.rows}
    assert leaked["served_bytes"].accuracy > 0.9 and leaked["served_bytes"].low > 0.75
    assert unpadded.overall.low > 0.6 and unpadded.overall.p_value < 0.01
    for feature in ("width", "height", "frames", "duration_ms", "palette_size"):
        assert leaked[feature].accuracy == 0.5  # equal on both sides: a coin
    # With the real clock, response times join as noise: still nowhere near the leak.
    timed = audit.blinding_audit(session=session, study=study, storage=storage)
    assert timed.overall.accuracy < 0.75


def test_audit_orients_each_matchup_as_its_first_trial_showed_it(session, settings):
    from sqlalchemy import select

    from app.rating.models import Trial

    study = leaky_study(session, settings, slug="oriented", prompts=3, arms=2, evaluators=1)
    first = {}
    for trial in session.scalars(select(Trial).order_by(Trial.id)):
        if trial.shown_at is not None:
            first.setdefault(trial.matchup_id, trial.a_on_left)
    units = audit.collect(session=session, study=study, storage=get_storage(settings))
    assert len(units) == len(first) == 3
    assert sorted(u.first_on_left for u in units) == sorted(first.values())


# --- the study file -----------------------------------------------------------------------------


def parsed(toml: str):  # type: ignore[no-untyped-def]
    return parse_study(
        toml_text=toml,
        toml_name="study.toml",
        prompts_bytes=SMALL_PROMPTS_CSV.encode(),
        prompts_name="prompts.csv",
    )


def test_arms_differing_in_frames_rate_or_size_are_refused_at_the_key():
    toml = SMALL_STUDY_TOML.format(slug="geom").replace(
        "steps = 1\n", "steps = 1\nfps = 12\nnum_frames = 8\n"
    )
    with pytest.raises(StudyFileError) as refused:
        parsed(toml)
    lines = toml.splitlines()
    problems = {p.message.split(":")[0]: p for p in refused.value.problems}
    assert set(problems) == {"arms.1.fps", "arms.1.num_frames"}
    for key, problem in problems.items():
        name = key.rsplit(".", 1)[1]
        row = lines[problem.line - 1]
        assert row.startswith(f"{name} = ") and row[problem.column - 1 :] == row.split(" = ")[1]
        assert "allow_arm_differences = true" in problem.message
        assert "'fast'" in problem.message and "'slow'" in problem.message
    # An arm falling back to [render] while another overrides it: the same refusal.
    first_only = SMALL_STUDY_TOML.format(slug="geom").replace(
        "steps = 2\n", "steps = 2\nwidth = 128\n"
    )
    with pytest.raises(StudyFileError, match=r"arms\.1\.width: arm 'fast' has width = 64"):
        parsed(first_only)


def test_the_study_file_may_allow_arm_differences_explicitly():
    toml = (
        SMALL_STUDY_TOML.format(slug="geom")
        .replace("steps = 1\n", "steps = 1\nfps = 12\n")
        .replace("fps = 8\n", "fps = 8\nallow_arm_differences = true\n", 1)
    )
    draft = parsed(toml)
    assert [arm.fps for arm in draft.arms] == [8, 12]
    assert all(not hasattr(arm, "allow_arm_differences") for arm in draft.arms)


def test_the_examples_still_load():
    for path in sorted(EXAMPLE_STUDY.parent.parent.glob("*/study.toml")):
        draft = load_study_file(path)
        assert len({(a.num_frames, a.fps, a.width, a.height) for a in draft.arms}) == 1


def test_the_admin_upload_form_refuses_them_too(admin):
    from tests.kit.admin import csrf_of

    form = admin.get("/admin/studies/new")
    toml = SMALL_STUDY_TOML.format(slug="geom-form").replace("steps = 1\n", "steps = 1\nfps = 12\n")
    response = admin.post(
        "/admin/studies",
        data={"csrf_token": csrf_of(form.text)},
        files={
            "study_file": ("study.toml", toml.encode(), "application/toml"),
            "prompts_file": ("prompts.csv", SMALL_PROMPTS_CSV.encode(), "text/csv"),
        },
    )
    assert response.status_code == 422
    assert "arms.1.fps" in response.text and "allow_arm_differences" in response.text


# --- the command and the dashboard --------------------------------------------------------------


def run_cli(settings, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "VIDARENA_DATABASE_URL": settings.database_url,
        "VIDARENA_VAR_DIR": str(settings.var_dir),
        "VIDARENA_STORAGE_URL": settings.storage_url,
    }
    return subprocess.run(
        [*VIDARENA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_audit_prints_the_table_and_ends_with_the_accuracy(session, settings, tmp_path):
    study = leaky_study(session, settings, slug="cli-audit", arms=2)
    padded = run_cli(settings, tmp_path, "audit", "blinding", study.slug)
    assert padded.returncode == 0, padded.stderr
    last = padded.stdout.strip().splitlines()[-1]
    assert "served bytes" in padded.stdout and "all features together" in padded.stdout
    assert last.startswith("Blinding audit: arm predicted from served bytes and metadata with ")
    assert "(95% CI " in last and "12 matchups, permutation p " in last
    assert last.endswith("), chance is 50%")
    unpadded = run_cli(settings, tmp_path, "audit", "blinding", study.slug, "--unpadded")
    assert unpadded.returncode == 0, unpadded.stderr
    bytes_line = next(line for line in unpadded.stdout.splitlines() if "served bytes" in line)
    assert "100.0%" in bytes_line
    missing = run_cli(settings, tmp_path, "audit", "blinding", "no-such-study")
    assert missing.returncode == 2


def test_dashboard_panel_shows_the_audit_to_the_admin_only(client, session, settings):
    from tests.kit.admin import log_in

    study = leaky_study(session, settings, slug="panel-audit", arms=2, evaluators=1)
    url = f"/admin/studies/{study.slug}/dashboard/blinding"
    assert client.get(url, follow_redirects=False).status_code in (303, 401, 403)
    log_in(client)
    page = client.get(f"/admin/studies/{study.slug}/dashboard")
    assert page.status_code == 200 and 'id="blinding"' in page.text and url in page.text
    panel = client.get(url)
    assert panel.status_code == 200
    assert "Blinding audit: arm predicted from served bytes and metadata with" in panel.text
    assert "served bytes" in panel.text and "12 matchups" in panel.text
    assert client.get(url).text == panel.text  # kept: the same computation
    assert client.get(f"{url}?fresh=1").status_code == 200
