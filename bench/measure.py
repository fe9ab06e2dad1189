"""One server's figures: a warm-up, then timed creates and timed reads, with their CPU cost."""

from __future__ import annotations

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


async def measure(server: Server, params: Params) -> Figures:
    url, concurrency = server.base_url, params.concurrency
    _, warm_ids = await load.create(url, PATIENT_JSON, params.warmup, concurrency)
    await load.read(url, warm_ids, params.warmup, concurrency)
    before = usage(server.pid)
    create, ids = await load.create(url, PATIENT_JSON, params.creates, concurrency)
    between = usage(server.pid)
    read = await load.read(url, ids, params.reads, concurrency)
    after = usage(server.pid)
    return Figures(Measurement(create, between - before), Measurement(read, after - between))
