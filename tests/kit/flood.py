"""A request flood, as an attacker would send it: `python -m tests.kit.flood SPEC.json` fires,
for each target in turn, `count` concurrent requests at once and prints one JSON object: per
target, the status codes seen and the slowest answer. A process of its own (asyncio + aiohttp),
so the tests' evaluators measure the server, not this client's event loop. Loopback only; it
stops when every request has been answered or timed out.

SPEC: {"base": "http://127.0.0.1:PORT", "timeout": 60,
       "targets": [{"name": ..., "method": "GET", "path": ..., "count": 200,
                    "headers": {...}, "json": {...} | null}]}
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp


async def one(
    session: aiohttp.ClientSession, base: str, target: dict[str, Any]
) -> tuple[int, float]:
    started = time.monotonic()
    try:
        async with session.request(
            target.get("method", "GET"),
            base + target["path"],
            headers=target.get("headers") or {},
            json=target.get("json"),
            allow_redirects=False,
        ) as response:
            await response.read()
            return response.status, time.monotonic() - started
    except (TimeoutError, aiohttp.ClientError):
        return 0, time.monotonic() - started  # 0: no answer (refused, reset or timed out)


async def burst(base: str, target: dict[str, Any], timeout: float) -> dict[str, Any]:
    count = target["count"]
    connector = aiohttp.TCPConnector(limit=count, force_close=True)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        results = await asyncio.gather(*(one(session, base, target) for _ in range(count)))
    statuses = Counter(str(status) for status, _ in results)
    return {"statuses": dict(statuses), "slowest": max(seconds for _, seconds in results)}


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    report = {}
    for target in spec["targets"]:
        report[target["name"]] = await burst(spec["base"], target, spec.get("timeout", 60))
    return report


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    print(json.dumps(asyncio.run(main(spec))))
