"""The Store's keyed records (storage/base.py `Record`), on every backend: what the
built-in authorization server keeps there needs an atomic insert-if-absent (RFC 7523
section 3 / SMART backend-services.html: a `jti` is refused the second time) and an
atomic read-and-delete (RFC 6749 section 4.1.2: an authorization code is used once;
section 10.4 / 6: refresh-token rotation). An expiring lock with an owner (the
subscription engine's delivery and matcher locks) needs a compare-and-set renewal and a
compare-and-delete release, so that a holder whose lock ran out touches nobody else's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fhirserver.storage.base import Record, Store

NOW = datetime.now(UTC).replace(microsecond=0)
LATER = NOW + timedelta(minutes=5)
LATER_STEP = timedelta(minutes=5)


async def test_put_get_replace_delete(store: Store) -> None:
    await store.put_record("client", "app", {"scopes": "system/*.rs", "n": 1}, None)
    assert await store.get_record("client", "app", NOW) == {"scopes": "system/*.rs", "n": 1}
    await store.put_record("client", "app", {"n": 2}, None)
    assert await store.get_record("client", "app", NOW) == {"n": 2}
    assert await store.get_record("user", "app", NOW) is None
    assert await store.delete_record("client", "app") is True
    assert await store.delete_record("client", "app") is False
    assert await store.get_record("client", "app", NOW) is None


async def test_keys_with_separators_stay_apart(store: Store) -> None:
    await store.put_record("code", "a/b:c", {"which": 1}, None)
    await store.put_record("code", "a", {"which": 2}, None)
    assert await store.get_record("code", "a/b:c", NOW) == {"which": 1}
    assert await store.get_record("code", "a", NOW) == {"which": 2}


async def test_expired_records_count_as_absent(store: Store) -> None:
    await store.put_record("code", "c", {"x": 1}, LATER)
    assert await store.get_record("code", "c", NOW) == {"x": 1}
    assert await store.get_record("code", "c", LATER) is None
    assert await store.take_record("code", "c", LATER) is None
    assert await store.list_records("code", LATER) == []


async def test_list_is_by_key_and_of_one_kind(store: Store) -> None:
    await store.put_record("user", "bob", {"u": "b"}, None)
    await store.put_record("user", "alice", {"u": "a"}, LATER)
    await store.put_record("client", "zed", {}, None)
    assert await store.list_records("user", NOW) == [
        Record("user", "alice", {"u": "a"}, LATER),
        Record("user", "bob", {"u": "b"}, None),
    ]


async def test_take_is_one_time(store: Store) -> None:
    await store.put_record("code", "c", {"grant": "g"}, LATER)
    assert await store.take_record("code", "c", NOW) == {"grant": "g"}
    assert await store.take_record("code", "c", NOW) is None
    assert await store.get_record("code", "c", NOW) is None


async def test_concurrent_takes_give_the_record_to_exactly_one(store: Store) -> None:
    await store.put_record("code", "c", {"grant": "g"}, LATER)
    results = await asyncio.gather(*(store.take_record("code", "c", NOW) for _ in range(8)))
    assert [r for r in results if r is not None] == [{"grant": "g"}]


async def test_add_refuses_the_second_time(store: Store) -> None:
    assert await store.add_record("jti", "app/1", {}, LATER, NOW) is True
    assert await store.add_record("jti", "app/1", {"again": True}, LATER, NOW) is False
    assert await store.get_record("jti", "app/1", NOW) == {}
    # Another key, or another kind, is another record.
    assert await store.add_record("jti", "app/2", {}, LATER, NOW) is True
    assert await store.add_record("seen", "app/1", {}, LATER, NOW) is True


async def test_concurrent_adds_let_exactly_one_in(store: Store) -> None:
    results = await asyncio.gather(
        *(store.add_record("jti", "x", {"n": n}, LATER, NOW) for n in range(8))
    )
    assert results.count(True) == 1


async def test_add_replaces_an_expired_record_and_never_a_permanent_one(store: Store) -> None:
    await store.put_record("jti", "old", {"v": 1}, NOW)
    assert await store.add_record("jti", "old", {"v": 2}, LATER, NOW) is True
    assert await store.get_record("jti", "old", NOW) == {"v": 2}
    await store.put_record("jti", "forever", {"v": 1}, None)
    assert await store.add_record("jti", "forever", {"v": 2}, LATER, LATER) is False


async def test_records_leave_resources_and_history_alone(store: Store) -> None:
    await store.put_record("client", "app", {"x": 1}, None)
    assert await store.count() == 0
    assert await store.changes(0, 10) == []


async def test_replace_is_compare_and_set_on_the_body(store: Store) -> None:
    mine, theirs = {"owner": "a", "n": 1}, {"owner": "b"}
    await store.put_record("lock", "k", mine, LATER)
    # Key order does not matter: the same JSON is the same body.
    same = {"n": 1, "owner": "a"}
    assert await store.replace_record("lock", "k", same, mine, LATER + LATER_STEP, NOW) is True
    assert await store.replace_record("lock", "k", theirs, theirs, LATER, NOW) is False
    assert await store.get_record("lock", "k", NOW) == mine
    assert await store.list_records("lock", NOW) == [Record("lock", "k", mine, LATER + LATER_STEP)]
    # Absent, or of another kind: nothing to replace, nothing created.
    assert await store.replace_record("lock", "none", mine, mine, LATER, NOW) is False
    assert await store.replace_record("other", "k", mine, mine, LATER, NOW) is False
    assert await store.get_record("lock", "none", NOW) is None


async def test_replace_refuses_an_expired_record(store: Store) -> None:
    # Past `expires` a record is absent: a lock that ran out is not renewed.
    await store.put_record("lock", "k", {"owner": "a"}, LATER)
    assert not await store.replace_record(
        "lock", "k", {"owner": "a"}, {"owner": "a"}, LATER + LATER_STEP, LATER
    )
    assert await store.get_record("lock", "k", NOW) == {"owner": "a"}


async def test_concurrent_replaces_let_exactly_one_through(store: Store) -> None:
    await store.put_record("lock", "k", {"owner": "a"}, LATER)
    results = await asyncio.gather(
        *(
            store.replace_record("lock", "k", {"owner": "a"}, {"owner": str(n)}, LATER, NOW)
            for n in range(8)
        )
    )
    assert results.count(True) == 1
    [winner] = [str(n) for n, won in enumerate(results) if won]
    assert await store.get_record("lock", "k", NOW) == {"owner": winner}


async def test_delete_only_if_the_body_is_the_one_given(store: Store) -> None:
    await store.put_record("lock", "k", {"owner": "b"}, LATER)
    assert await store.delete_record("lock", "k", only_if={"owner": "a"}) is False
    assert await store.get_record("lock", "k", NOW) == {"owner": "b"}
    assert await store.delete_record("lock", "k", only_if={"owner": "b"}) is True
    assert await store.get_record("lock", "k", NOW) is None
    assert await store.delete_record("lock", "k", only_if={"owner": "b"}) is False
