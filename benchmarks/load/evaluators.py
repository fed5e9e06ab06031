"""The simulated evaluators: each does what the browser's rating page (static/rate.js) does, from
joining with a personal invite to submitting its quota of pairs, prefetching the next pair and
its clips while "watching" the current one; a new evaluator takes each finished one's place."""

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

    async def join(self, client: Any) -> dict[str, str]:
        from app.rating import tokens

        invite, _ = tokens.new_invite(SECRET_KEY, self.seeded.study_id)
        response = await timed(
            self.stats,
            "join",
            lambda: client.post(f"{self.base}/api/join", json={"invite": invite}),
        )
        self.stats.joins += 1
        return {"Authorization": f"Bearer {response.json()['evaluator_token']}"}

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
        headers = await self.join(client)
        api = f"{self.base}/api"
        first = await timed(self.stats, "next", lambda: client.get(f"{api}/next", headers=headers))
        current = first.json()
        if current["status"] != "trial":
            self.stats.error("next", f"no first pair: {current}")
            raise RequestFailedError("next")
        await self.media(client, current["trial"])
        step = 0
        while time.monotonic() < self.deadline:
            trial = current["trial"]
            # Prefetch the following pair and its clips while "watching" this one: a submit's
            # answer carries it (`after`); for the first pair it is asked for.
            if current.get("after"):
                upcoming = {"status": "trial", "trial": current["after"]}
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
