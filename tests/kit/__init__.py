"""The one kit for tests and benchmarks: every helper shared by more than one test file (or by a
benchmark) lives here, by concern. Test files import from here, never from one another;
tests/conftest.py holds the fixtures (built on this kit).

- `paths`: ROOT, EXAMPLE_STUDY (the founding study file).
- `services`: require_service (skip locally, fail in CI), free_port, Redis (redis_broker_url,
  private_redis).
- `db`: POSTGRES_URL, postgres_database, fresh_database (migrated SQLite or PostgreSQL),
  empty_tables, db (a short read transaction), count (rows as the app committed them).
- `config`: configured (a validated Settings copy), env_without_vidarena.
- `admin`: ADMIN_PASSWORD, csrf_of, log_in, admin_token, upload (a study file over HTTP).
- `studies`: SMALL_STUDY_TOML / SMALL_PROMPTS_CSV, example_study, small_study, rating studies
  whose clips are done (ARMS, PROMPT_TEXTS, CRITERIA, study_toml, rating_study, listed_study,
  mark_clips_done, store_clips).
- `media`: GIF bytes (gif_bytes, noise_gif_bytes, encoded_gif_bytes).
- `rating`: link, invite_token, all_left, join (over HTTP), evaluator, answer, run_session.
- `votes`: cast_votes with known preference rates, flagged_evaluator_ids, copy_votes.
- `blinding`: arm_gif, leaky_study (arms whose GIFs differ only in bytes, rated by simulated
  evaluators: the blinding audit's known leak).
- `clips`: write_manifest, imported_study (clips through `vidarena clips import`).
- `cli`: VIDARENA, run (the command line in a real process).
- `servers`: server_env, spawn_uvicorn, uvicorn_server, wait_until_healthy, stop_group,
  kill_group, answers, get_json.
- `workers`: worker_env, running_worker, kill_worker, wait_until (real render workers).
- `s3`: running_s3_server, s3_client, s3_settings (moto on loopback).
- `browser`: CHROMIUM, DESKTOP, PHONE, sign_in.
- `flood`: `python -m tests.kit.flood SPEC.json`, a request flood in a process of its own.
"""
