"""Load: simulated evaluators through the real HTTP rating flow against uvicorn, on SQLite and
PostgreSQL, in two modes, with a reconciliation of every vote at the end.

Each simulated evaluator does what the browser's rating page (static/rate.js) does: join with a
personal invite (`POST /r/<key>/api/join`, bearer token), whose answer carries the first pair and
the pair after it (assigned ahead), then for every pair: fetch both clips of the following pair
(`GET /r/<key>/media/<token>`) while "watching" this one, and submit this pair's votes on every
criterion (`POST /api/trials/<id>/votes`). A submit's answer carries the next pair and the one
after it; the last pair says so (`last`), so nothing is asked after it, and its answer says
done (`GET /api/next?after=<id>` only for a pair with neither, which this study never has). An
evaluator who reaches the study's quota is replaced by a newly invited one.

- **realistic**: N evaluators (200 and 1000 by default) arrive at uniform random times over the
  first `--ramp` seconds (30: 1000 evaluators in 30 s is already a crowd answering one
  announcement; `--ramp 7` is a flash crowd) and think `--think` seconds (uniform) per pair, for
  `--duration` seconds: p50/p95/p99 latency of next-pair and submit over the whole run, ramp
  included (target: p99 < 50 ms at 1000 evaluators on 2 cores);
- **saturation**: `--clients` evaluators with no think time: trials/s sustained, measured in the
  same run beside two floors on the same database kind, served the same way: a minimal FastAPI
  endpoint doing one indexed read and one insert per request in one transaction, and a
  submit-shaped one doing the writes of one answer naively (one evaluator read, one trial
  update, six vote inserts, one trial insert, one commit; target: at least 0.7 of it).

Either way: every request must succeed, and votes sent (successful submits x criteria) = votes
stored (SQL count) = votes exported (rows of `vidarena export votes SLUG -o FILE`). After each
run the report counts the SQL statements per join, submit and resume on that run's database
(in-process, benchmarks/load/statements.py) and sets them beside the run's CPU per trial.

The server under load is W processes of `uvicorn app.main:create_app --factory`, each on a port
of its own with the simulated evaluators spread evenly over them (as W replicas behind a load
balancer; see `Server` for why not `--workers W`), with `VIDARENA_ENV=production`, rate limits
disabled (`VIDARENA_RATE_LIMIT_*_PER_MINUTE=0`: every simulated evaluator joins from 127.0.0.1),
`VIDARENA_LOG_LEVEL=WARNING` (no access lines) and `PROMETHEUS_MULTIPROC_DIR` set as
docker-compose.yml does. `--pin` pins each uvicorn process to a core of its own with `taskset`
(docs/measurements.md: sync endpoints' threads fight over the GIL when one process spreads
across cores).
The load generator (asyncio + aiohttp) runs on the same machine and its CPU use is reported
beside the server's. Loopback only; every phase stops by
itself after its duration.

    .venv/bin/python -m benchmarks.load                       # everything: about 10 minutes
    .venv/bin/python -m benchmarks.load --db sqlite --mode saturation --duration 20
"""

# One module per concern:
#   cli          the command line (arguments) and the run: scenarios in turn, then the report
#   config       per-run secrets and the constants every part shares (quota, choices, floor size)
#   study        the seeded example study, and the reconciliation (votes stored, exported, partial)
#   server       W uvicorn processes a port each (started by tests.kit.servers), their environment
#                and their server-side latency (/metrics)
#   client       the HTTP client of the simulated evaluators, timing and retrying like the page
#   evaluators   the simulated evaluators (the rating page's flow) and their arrivals
#   floor        the floors: a minimal FastAPI endpoint (one indexed read, one insert) and a
#                submit-shaped one (one answer's writes, naively), and their load
#   statements   SQL statements per request, counted in-process on the run's database
#   scenarios    one measured run (realistic or saturation) on one database kind
#   stats        latencies, percentiles, trials per second in a window
#   cpu          CPU seconds of the server, the load generator and PostgreSQL; the machine
#   report       the Markdown tables and the JSON results
# Databases, free ports, server start and stop, the study file and the GIFs come from tests/kit.

from __future__ import annotations

import sys

try:
    import sniffio  # noqa: F401
except ImportError:  # httpcore tries `import sniffio` on every request; a miss searches sys.path
    sys.modules["sniffio"] = None  # type: ignore[assignment]
