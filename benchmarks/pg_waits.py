"""What PostgreSQL's backends wait on, sampled: run it beside a load run to see whether time goes
to locks, the commit's fsync, or waiting for the web processes.

    .venv/bin/python benchmarks/pg_waits.py --seconds 30 --database 'vidarena%'

Every `--every` seconds it reads `pg_stat_activity` (client backends of the matching databases)
and prints, per (wait event type, wait event, state), how many backends were in it per sample on
average. `Lock` means a row, tuple or advisory lock wait; `Client/ClientRead` with state
`idle in transaction` means a transaction open while PostgreSQL waits for the application.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import psycopg

QUERY = """
SELECT coalesce(wait_event_type, 'CPU'), coalesce(wait_event, 'running'), state
FROM pg_stat_activity
WHERE datname LIKE %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="vidarena%", help="a LIKE pattern")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--every", type=float, default=0.05)
    args = parser.parse_args()
    seen: Counter[tuple[str, str, str]] = Counter()
    samples = 0
    end = time.monotonic() + args.seconds
    with psycopg.connect(args.url, autocommit=True) as conn:
        while time.monotonic() < end:
            for row in conn.execute(QUERY, (args.database,)).fetchall():
                seen[row] += 1
            samples += 1
            time.sleep(args.every)
    print(f"{samples} samples; backends per sample, by wait:")
    for (kind, event, state), n in seen.most_common():
        print(f"{n / samples:7.2f}  {kind} / {event} ({state})")


if __name__ == "__main__":
    main()
