"""Table Storage state against Azurite: rows, transactions, leases."""

from __future__ import annotations

import threading
from datetime import timedelta

from shared.state import Store


def test_rows_round_trip_and_many_rows_go_through_transactions(store: Store) -> None:
    state = store.for_tenant("tenantA")
    state.upsert("links", {f"user{i}": {"cv": str(i), "n": i, "tags": ["a", "b"], "gone": None} for i in range(250)})
    rows = state.rows("links")
    assert len(rows) == 250
    assert rows["user7"] == {"cv": "7", "n": 7, "tags": '["a", "b"]'}
    state.delete("links", ["user7", "not-there"])
    assert state.get("links", "user7") is None


def test_tenants_never_share_a_partition(store: Store) -> None:
    a, b = store.for_tenant("a"), store.for_tenant("b")
    a.upsert("links", {"x": {"v": 1}})
    assert b.rows("links") == {}
    a.upsert("contactmap", {"c1": {"v": 1}}, scope="owner1")
    assert a.rows("contactmap") == {} and a.rows("contactmap", scope="owner1") == {"c1": {"v": 1}}


def test_cursor_is_replaced_not_merged(store: Store) -> None:
    state = store.for_tenant("t")
    state.set_cursor("users", "https://graph/delta?x=1", full_at="yesterday")
    state.set_cursor("users", "https://graph/delta?x=2")
    cursor = state.cursor("users")
    assert cursor is not None and cursor["delta_link"].endswith("x=2") and "full_at" not in cursor


def test_of_two_simultaneous_lease_takers_exactly_one_proceeds(store: Store) -> None:
    state = store.for_tenant("t")
    results = _race(store, "users")
    assert sum(r is not None for r in results) == 1
    assert state.acquire_lease("users", timedelta(minutes=5)) is None


def test_an_expired_lease_is_taken_over_by_exactly_one_of_two_racers(store: Store) -> None:
    state = store.for_tenant("t")
    assert state.acquire_lease("calendar", timedelta(seconds=-1)) is not None  # a crashed run's lease
    results = _race(store, "calendar")
    assert sum(r is not None for r in results) == 1


def test_release_frees_the_lease_only_for_its_owner(store: Store) -> None:
    state = store.for_tenant("t")
    lease = state.acquire_lease("contacts", timedelta(minutes=5))
    assert lease is not None
    state.release_lease(lease)
    again = state.acquire_lease("contacts", timedelta(minutes=5))
    assert again is not None
    state.release_lease(lease)  # the old owner's release must not free the new owner's lease
    assert state.acquire_lease("contacts", timedelta(minutes=5)) is None


def _race(store: Store, sync: str) -> list[object]:
    """Two takers released at the same instant, each with its own clients."""
    barrier = threading.Barrier(2)
    results: list[object] = []

    def take() -> None:
        barrier.wait()
        results.append(store.for_tenant("t").acquire_lease(sync, timedelta(minutes=5)))

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
