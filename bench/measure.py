"""Each server's figures: a warm-up, then timed creates and timed reads, with their CPU
cost, measured in turns.

The servers take turns, ROUNDS times over, creating and then reading a share of the
requests each, and each server's figures add its turns up. Measured one after the other
(all of one server's creates, then all of the next's), the ratio between two servers
moved with the machine's speed, which drifts here by 15% and more within a minute: the
bare endpoint's create rate read 810 and 1,087 req/s in two runs minutes apart, and the
ratio 0.37 and 0.49. In turns, a slower or faster stretch falls on every server alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench import load
from bench.cpu import Usage, usage
from bench.load import Rate
from bench.params import Params
from bench.patient import PATIENT_JSON
from bench.servers import Server


@dataclass(frozen=True, slots=True)
class Measurement:
    rate: Rate
    usage: Usage

    @property
    def server_micros(self) -> float | None:
        """Server CPU time per request, in microseconds."""
        if self.usage.server is None:
            return None
        return self.usage.server / self.rate.requests * 1e6

    @property
    def client_micros(self) -> float:
        """Load client CPU time per request, in microseconds."""
        return self.usage.client / self.rate.requests * 1e6

    @property
    def client_share(self) -> float:
        """How much of one CPU the load client kept busy."""
        return self.usage.client / self.rate.seconds


@dataclass(frozen=True, slots=True)
class Figures:
    create: Measurement
    read: Measurement


# Turns each server takes at creating, and then at reading.
ROUNDS = 3


async def measure(servers: Sequence[Server], params: Params) -> list[Figures]:
    """The figures of each of `servers`, in the same order, measured in turns."""
    concurrency = params.concurrency
    for server in servers:
        _, warm_ids = await load.create(server.base_url, PATIENT_JSON, params.warmup, concurrency)
        await load.read(server.base_url, warm_ids, params.warmup, concurrency)
    creates: list[Measurement | None] = [None] * len(servers)
    ids: list[list[str]] = [[] for _ in servers]
    for count in _shares(params.creates):
        for n, server in enumerate(servers):
            before = usage(server.pid)
            rate, made = await load.create(server.base_url, PATIENT_JSON, count, concurrency)
            creates[n] = _added(creates[n], Measurement(rate, usage(server.pid) - before))
            ids[n] += made
    reads: list[Measurement | None] = [None] * len(servers)
    for count in _shares(params.reads):
        for n, server in enumerate(servers):
            before = usage(server.pid)
            rate = await load.read(server.base_url, ids[n], count, concurrency)
            reads[n] = _added(reads[n], Measurement(rate, usage(server.pid) - before))
    return [
        Figures(create, read)
        for create, read in zip(creates, reads, strict=True)
        if create is not None and read is not None
    ]


def _shares(total: int) -> list[int]:
    """`total` requests in ROUNDS turns (fewer when there are fewer requests)."""
    rounds = max(1, min(ROUNDS, total))
    return [total // rounds + (1 if turn < total % rounds else 0) for turn in range(rounds)]


def _added(sofar: Measurement | None, turn: Measurement) -> Measurement:
    if sofar is None:
        return turn
    return Measurement(sofar.rate + turn.rate, sofar.usage + turn.usage)
