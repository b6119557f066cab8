"""A Redis primary dies under load and its lagging replica is promoted behind the endpoint.

The topology and the load are testing/failover.py's. Without `WAIT` the run reports what it
lost; with `REDIS_WAIT_REPLICAS=1` nothing acknowledged is lost or handed out twice.
"""

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from app.errors import ReplicationShortfall
from app.stores.redis import RedisStore
from testing.failover import PER_WORKER, WORKERS, Answers, counter_value, redis_client, topology
from testing.failover import failover_run as _failover_run
from testing.servers.redis import RedisServer
from tests.conftest import Servers, make_settings, once, open_store, serve

pytestmark = pytest.mark.redis


async def failover_run(
    servers: Servers, tmp_path: Path, wait_replicas: int
) -> tuple[Answers, Answers]:
    return await _failover_run(lambda: servers.dedicated(RedisServer), tmp_path, wait_replicas)


def assert_accounting(plain: Answers, keyed: Answers) -> None:
    """The final counters hold what was answered, less what was lost, plus unknown outcomes."""
    assert len(keyed.acked) == WORKERS * PER_WORKER  # every keyed client got its answer
    # Every keyed increment counted once, the failover's retries included, unless lost.
    assert keyed.final == len(keyed.acked) - keyed.lost
    # No plain increment counted twice: beyond the answered ones that survived, only those
    # answered with a 503 may have been applied.
    kept = len(plain.acked) - plain.lost
    assert kept <= plain.final <= kept + plain.unknown
    # The failover did happen mid-load: answers came from both sides of it.
    assert {early for _, early in plain.acked + keyed.acked} == {True, False}


def assert_none_lost_or_handed_out_twice(plain: Answers, keyed: Answers) -> None:
    for answers in (plain, keyed):
        assert answers.lost == 0
        assert answers.handed_out_twice == 0
    assert_accounting(plain, keyed)


def record_losses(
    plain: Answers, keyed: Answers, record_property: Callable[[str, object], None]
) -> None:
    for kind, answers in (("plain", plain), ("keyed", keyed)):
        record_property(f"{kind}_lost", answers.lost)
        record_property(f"{kind}_handed_out_twice", answers.handed_out_twice)
        print(f"{kind}: lost {answers.lost}, handed out twice {answers.handed_out_twice}")


async def test_with_wait_no_acknowledged_increment_is_lost_or_handed_out_twice(
    servers: Servers, tmp_path: Path
) -> None:
    plain, keyed = await failover_run(servers, tmp_path, wait_replicas=1)
    assert_none_lost_or_handed_out_twice(plain, keyed)


async def test_without_wait_the_run_completes_and_reports_its_losses(
    servers: Servers, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    plain, keyed = await failover_run(servers, tmp_path, wait_replicas=0)
    record_losses(plain, keyed, record_property)
    assert_accounting(plain, keyed)


async def test_a_write_short_of_its_replicas_is_a_counted_503_and_a_keyed_retry_counts_once(
    servers: Servers, tmp_path: Path
) -> None:
    async with topology(lambda: servers.dedicated(RedisServer)) as topo:
        settings = make_settings(
            redis_url=f"redis://127.0.0.1:{topo.endpoint.port}/0",
            redis_cluster=False,
            redis_wait_replicas=1,
            redis_wait_timeout_ms=200,
            stores=["redis"],
            sqlite_path=tmp_path / "unused.db",
        )
        key = f"short-{uuid.uuid4().hex}"
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        async for http in serve(settings):
            assert (await http.post(f"/redis/{key}", headers=headers)).json()["counter"] == 1
            topo.link.set("stall")  # the replica hears nothing and acknowledges nothing
            plain = await http.post(f"/redis/{key}")
            keyed = await http.post(f"/redis/{key}", headers={"Idempotency-Key": "again"})
            for response in (plain, keyed):
                assert response.status_code == 503
                assert "reached 0 of 1 replicas within 200 ms" in response.json()["error"]
            metrics = (await http.get("/metrics")).text
            assert 'atomic_counter_redis_wait_shortfall_total{operation="increment"} 1.0' in metrics
            shortfall = 'atomic_counter_redis_wait_shortfall_total{operation="increment_once"} 1.0'
            assert shortfall in metrics

            topo.link.set("delay")
            # The primary applied both: the keyed retry replays its record, and is
            # acknowledged only once the replica has it.
            retry = await http.post(f"/redis/{key}", headers={"Idempotency-Key": "again"})
            assert retry.status_code == 200
            assert retry.headers["idempotent-replayed"] == "true"
            assert retry.json()["counter"] == 3
        replica = await redis_client(topo.replica.port)
        try:
            assert await counter_value(replica, key) == 3
        finally:
            await replica.aclose()


async def test_wait_with_no_replica_to_answer_refuses_every_write_and_serves_reads(
    servers: Servers,
) -> None:
    lone = servers.shared(RedisServer)
    key = f"lone-{uuid.uuid4().hex}"
    async with open_store(
        RedisStore, redis_url=lone.url, redis_wait_replicas=1, redis_wait_timeout_ms=50
    ) as store:
        with pytest.raises(ReplicationShortfall):
            await store.increment(key)
        with pytest.raises(ReplicationShortfall):
            await store.increment_once(key, 1, None, once())
        assert await store.get(key) == 2  # applied on the primary: the outcome was unknown
