"""Jobs kept in the store (DESIGN.md "Scale-out", "Side effects and external calls"):
recorded with a unit's writes, claimed in due order under a lease that one owner holds at
a time, taken over once the lease runs out (the old holder's finish or retry then fails),
retried, replaced and dropped. Runs on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from fhirserver.storage.base import Job, Store, Version

T0 = datetime(2024, 1, 1, tzinfo=UTC)
LEASE = timedelta(minutes=5)
SECOND = timedelta(seconds=1)


async def put_jobs(store: Store, *jobs: Job) -> None:
    async with store.unit_of_work() as unit:
        for job in jobs:
            await unit.put_job(job)


async def claim(store: Store, owner: str, now: datetime, kinds: Sequence[str] = ("retry",)) -> Job:
    job = await store.claim_job(kinds, owner, now, LEASE)
    assert job is not None
    return job


async def test_put_job_commits_with_the_units_writes(store: Store) -> None:
    async with store.unit_of_work() as unit:
        await unit.write(Version("Appointment", "a", 1, T0, "POST", b"{}"), ())
        await unit.put_job(Job("no-show", "Appointment/a", T0 + timedelta(hours=1), b'{"v":1}'))
    assert await store.read("Appointment", "a") is not None
    job = await claim(store, "w1", T0 + timedelta(hours=2), ["no-show"])
    assert (job.kind, job.key, job.payload, job.attempts) == (
        "no-show",
        "Appointment/a",
        b'{"v":1}',
        0,
    )
    assert job.due == T0 + timedelta(hours=1)
    assert job.owner == "w1" and job.lease_until == T0 + timedelta(hours=2) + LEASE


async def test_claims_go_by_due_order_within_the_kinds_asked(store: Store) -> None:
    await put_jobs(
        store,
        Job("retry", "late", T0 + timedelta(minutes=3)),
        Job("email", "first", T0),
        Job("retry", "early", T0 + timedelta(minutes=1)),
        Job("export", "middle", T0 + timedelta(minutes=2)),
    )
    now = T0 + timedelta(hours=1)
    kinds = ["retry", "export"]
    claimed = [(await claim(store, "w", now, kinds)).key for _ in range(3)]
    assert claimed == ["early", "middle", "late"]
    assert await store.claim_job(kinds, "w", now, LEASE) is None
    assert (await claim(store, "w", now, ["email"])).key == "first"


async def test_a_job_not_yet_due_is_not_claimed(store: Store) -> None:
    due = T0 + timedelta(hours=1)
    await put_jobs(store, Job("retry", "a", due))
    assert await store.claim_job(["retry"], "w", due - SECOND, LEASE) is None
    assert (await claim(store, "w", due)).key == "a"


async def test_a_held_lease_blocks_every_other_claim(store: Store) -> None:
    await put_jobs(store, Job("retry", "a", T0))
    held = await claim(store, "w1", T0)
    assert await store.claim_job(["retry"], "w2", T0 + LEASE - SECOND, LEASE) is None
    # Nor does the holder get it twice (one owner name may run several jobs at once).
    assert await store.claim_job(["retry"], "w1", T0 + SECOND, LEASE) is None
    assert await store.finish_job(held)
    assert not await store.finish_job(held)
    assert await store.claim_job(["retry"], "w2", T0 + timedelta(days=1), LEASE) is None


async def test_an_expired_lease_passes_to_another_owner(store: Store) -> None:
    await put_jobs(store, Job("retry", "a", T0))
    lost = await claim(store, "w1", T0)
    taken = await claim(store, "w2", T0 + LEASE + SECOND)
    assert taken.key == "a" and taken.owner == "w2"
    assert not await store.finish_job(lost)
    assert not await store.retry_job(lost, T0)
    # Neither call touched the job: w2 still holds it, with nothing counted.
    assert await store.claim_job(["retry"], "w3", T0 + LEASE + 2 * SECOND, LEASE) is None
    assert await store.retry_job(taken, T0 + timedelta(hours=1))
    again = await claim(store, "w3", T0 + timedelta(hours=1))
    assert again.attempts == 1


async def test_retry_counts_an_attempt_and_sets_the_due_time(store: Store) -> None:
    await put_jobs(store, Job("retry", "a", T0, b'{"n":1}'))
    first = await claim(store, "w1", T0)
    due = T0 + timedelta(minutes=1)
    assert await store.retry_job(first, due)
    assert await store.claim_job(["retry"], "w2", due - SECOND, LEASE) is None
    # Due again within w1's old lease: the retry gave the job back.
    second = await claim(store, "w2", due)
    assert (second.due, second.attempts, second.payload) == (due, 1, b'{"n":1}')
    assert not await store.retry_job(first, due)
    assert await store.retry_job(second, due)
    assert (await claim(store, "w3", due)).attempts == 2


async def test_putting_a_job_again_replaces_it_and_voids_its_claim(store: Store) -> None:
    await put_jobs(store, Job("export", "e", T0, b'{"v":1}'))
    old = await claim(store, "w1", T0, ["export"])
    replacement = Job("export", "e", T0 + timedelta(minutes=1), b'{"v":2}')
    await put_jobs(store, replacement)
    assert not await store.finish_job(old)
    assert not await store.retry_job(old, T0)
    # Claimable within w1's old lease, as put; and replaced, not added: once it is
    # finished there is none left.
    new = await claim(store, "w2", T0 + timedelta(minutes=1), ["export"])
    assert (new.due, new.payload, new.attempts) == (replacement.due, b'{"v":2}', 0)
    assert await store.finish_job(new)
    assert await store.claim_job(["export"], "w3", T0 + timedelta(days=1), LEASE) is None


async def test_drop_job(store: Store) -> None:
    await put_jobs(store, Job("retry", "a", T0), Job("retry", "b", T0), Job("retry", "c", T0))
    held = await claim(store, "w1", T0)
    async with store.unit_of_work() as unit:
        await unit.drop_job("retry", held.key)
        await unit.drop_job("retry", "missing")
        # Within a unit the last call for a key wins.
        await unit.put_job(Job("retry", "d", T0))
        await unit.drop_job("retry", "d")
        await unit.drop_job("retry", "e")
        await unit.put_job(Job("retry", "e", T0))
    assert not await store.finish_job(held)
    now = T0 + timedelta(days=1)
    left = {(await claim(store, "w2", now)).key for _ in range(3)}
    assert left == {"a", "b", "c", "e"} - {held.key}
    assert await store.claim_job(["retry"], "w2", now, LEASE) is None


async def test_concurrent_claims_give_each_job_to_one_owner(store: Store) -> None:
    keys = [f"j{n:02}" for n in range(12)]
    await put_jobs(store, *(Job("retry", key, T0 + n * SECOND) for n, key in enumerate(keys)))

    async def work(owner: str) -> list[Job]:
        taken: list[Job] = []
        # At most one claim a job: a store that hands out a job twice fails, not loops.
        for _ in keys:
            job = await store.claim_job(["retry"], owner, T0 + LEASE, LEASE)
            if job is None:
                break
            assert job.owner == owner
            taken.append(job)
        return taken

    taken = [
        job for jobs in await asyncio.gather(*(work(f"w{n}") for n in range(5))) for job in jobs
    ]
    assert sorted(job.key for job in taken) == keys
    assert all(await asyncio.gather(*(store.finish_job(job) for job in taken)))
