"""The simulated evaluators: each does what the browser's rating page (static/rate.js) does, from
joining with a personal invite (whose answer carries the first pair) to submitting its quota of
pairs, prefetching the next pair's clips while "watching" the current one and asking nothing
after the last pair; a new evaluator takes each finished one's place."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from benchmarks.load.client import Client, RequestFailedError, timed
from benchmarks.load.config import CHOICES, EVALUATORS_PER_CLIENT, SECRET_KEY
from benchmarks.load.stats import Stats
from benchmarks.load.study import Seeded


@dataclass
class Flow:
    clients: list[Any]
    seeded: Seeded
    stats: Stats
    deadline: float
    think: tuple[float, float]
    rng: random.Random

    @property
    def base(self) -> str:
        return f"/r/{self.seeded.key}"

    async def join(self, client: Any) -> tuple[dict[str, str], dict[str, Any]]:
        """Join with a new invite: the bearer header and the first pair (the join's `next`)."""
        from app.rating import tokens

        invite, _ = tokens.new_invite(SECRET_KEY, self.seeded.study_id)
        response = await timed(
            self.stats,
            "join",
            lambda: client.post(f"{self.base}/api/join", json={"invite": invite}),
        )
        self.stats.joins += 1
        joined = response.json()
        return {"Authorization": f"Bearer {joined['evaluator_token']}"}, joined["next"]

    async def media(self, client: Any, trial: dict[str, Any]) -> None:
        left, right = await asyncio.gather(
            timed(self.stats, "media", lambda: client.get(trial["left"]["url"])),
            timed(self.stats, "media", lambda: client.get(trial["right"]["url"])),
        )
        if not (left.content[:6] == right.content[:6] == b"GIF89a"):
            self.stats.error("media", "not a GIF")
            raise RequestFailedError("media")

    async def think_time(self) -> None:
        low, high = self.think
        if high > 0:
            await asyncio.sleep(self.rng.uniform(low, high))

    async def evaluator(self, slot: int, start_delay: float) -> None:
        """Evaluators, one after another in this slot, until the deadline."""
        client = self.clients[slot % len(self.clients)]
        await asyncio.sleep(start_delay)
        while time.monotonic() < self.deadline:
            try:
                await self.one_evaluator(client)
            except RequestFailedError:
                await asyncio.sleep(0.5)  # counted; carry on with a new evaluator

    async def one_evaluator(self, client: Any) -> None:
        headers, current = await self.join(client)
        api = f"{self.base}/api"
        if current is None or current["status"] != "trial":
            self.stats.error("join", f"no first pair: {current}")
            raise RequestFailedError("join")
        await self.media(client, current["trial"])
        step = 0
        while time.monotonic() < self.deadline:
            trial = current["trial"]
            # Prefetch the following pair's clips while "watching" this one: the join's and each
            # submit's answer carry it (`after`); the last pair says so (`last`) and nothing
            # follows it; otherwise (not seen here: a pair still rendering) it is asked for.
            if current.get("after"):
                upcoming = {"status": "trial", "trial": current["after"]}
            elif current.get("last"):
                upcoming = {"status": "done"}
            else:
                ahead = await timed(
                    self.stats,
                    "next",
                    partial(
                        client.get, f"{api}/next", params={"after": trial["id"]}, headers=headers
                    ),
                )
                upcoming = ahead.json()
            if upcoming["status"] == "trial":
                await self.media(client, upcoming["trial"])
            await self.think_time()
            votes = {
                k: CHOICES[(trial["id"] + step + i) % 3] for i, k in enumerate(self.seeded.criteria)
            }
            answer = await timed(
                self.stats,
                "submit",
                partial(
                    client.post,
                    f"{api}/trials/{trial['id']}/votes",
                    json={"votes": votes},
                    headers=headers,
                ),
            )
            self.stats.votes_sent += len(votes)
            self.stats.trials_done.append(time.monotonic())
            step += 1
            current = answer.json()["next"]
            if current["status"] == "done":
                return  # quota reached: a new evaluator takes this slot
            if current["status"] != "trial" or (
                upcoming["status"] == "trial" and current["trial"]["id"] != upcoming["trial"]["id"]
            ):
                self.stats.error("submit", f"unexpected next pair: {current}")
                raise RequestFailedError("submit")


async def drive_rating(
    base_urls: list[str],
    seeded: Seeded,
    *,
    evaluators: int,
    duration: float,
    think: tuple[float, float],
    ramp: float,
    connections: int,
    seed: int,
) -> tuple[Stats, float]:
    stats = Stats()
    started = time.monotonic()
    deadline = started + duration
    # At least one client per port; evaluator i uses client i % len(clients), so each port gets
    # the same number of evaluators.
    groups = -(-evaluators // EVALUATORS_PER_CLIENT)
    groups = -(-groups // len(base_urls)) * len(base_urls)
    per_client = max(1, -(-connections // groups))
    clients = [
        Client(base_urls[i % len(base_urls)], connections=per_client, timeout=60)
        for i in range(groups)
    ]
    try:
        flow = Flow(clients, seeded, stats, deadline, think, random.Random(seed))
        delays = [flow.rng.uniform(0, ramp) for _ in range(evaluators)]  # arrivals
        await asyncio.gather(*(flow.evaluator(i, d) for i, d in enumerate(delays)))
    finally:
        for client in clients:
            await client.aclose()
    return stats, time.monotonic() - started
