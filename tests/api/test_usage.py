"""Usage plans per API key: a token bucket per process, an exact daily quota across processes."""

import asyncio
import socket
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.counters import Counters
from app.main import create_app
from app.metrics import Metrics
from app.settings import SettingsError, load_settings
from app.usage import DailyQuota, QuotaExceeded, TokenBucket
from app.windows import GRACE_SECONDS
from testing.servers.redis import RedisServer
from testing.service import ServiceProcess
from tests.conftest import Servers, make_settings, serve, sqlite_client

KEYS = {"one": {"x-api-key": "key-one"}, "two": {"x-api-key": "key-two"}}


# --- The token bucket's shape, on a clock of our own ---------------------------------------


def test_a_full_bucket_lets_the_burst_through_then_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=20, burst=10, now=0.0)
    assert [bucket.take(0.0) for _ in range(10)] == [0.0] * 10
    assert bucket.take(0.0) == pytest.approx(1 / 20), "the next token is 1/rate away"
    assert bucket.take(0.05) == 0.0
    assert bucket.take(0.05) > 0
    assert [bucket.take(10.0) for _ in range(11)].count(0.0) == 10, "never more than the burst"


# --- Rate limit over HTTP ------------------------------------------------------------------


limited = sqlite_client(api_keys="key-one,key-two", rate_limit_per_second=20, rate_limit_burst=10)


@pytest.mark.sqlite
async def test_sixty_simultaneous_requests_let_about_the_burst_through(
    limited: httpx.AsyncClient,
) -> None:
    answers = await asyncio.gather(
        *(limited.post("/sqlite/limited", headers=KEYS["one"]) for _ in range(60))
    )
    ok = [a for a in answers if a.status_code == 200]
    throttled = [a for a in answers if a.status_code == 429]
    assert len(ok) + len(throttled) == 60
    # A few more than the burst may pass: the bucket refills while the 60 are served.
    assert 10 <= len(ok) <= 20, len(ok)
    assert sorted(a.json()["counter"] for a in ok) == list(range(1, len(ok) + 1))
    read = await limited.get("/sqlite/limited", headers=KEYS["two"])
    assert read.json()["counter"] == len(ok), "429s incremented nothing"
    for answer in throttled:
        assert answer.json() == {
            "error": "rate limit exceeded: 20 requests per second, burst 10",
            "limit": "rate",
        }
        assert answer.headers["Retry-After"] == "1"
        assert answer.headers["RateLimit-Policy"] == '"rate";q=10;w=1'
        assert answer.headers["RateLimit"] == '"rate";r=0;t=1'


@pytest.mark.sqlite
async def test_each_api_key_has_its_own_bucket(limited: httpx.AsyncClient) -> None:
    for _ in range(15):
        await limited.post("/sqlite/a", headers=KEYS["one"])
    assert (await limited.post("/sqlite/a", headers=KEYS["one"])).status_code == 429
    assert (await limited.post("/sqlite/b", headers=KEYS["two"])).status_code == 200
    text = (await limited.get("/metrics")).text
    assert "key-one" not in text, "metrics name key ids, never keys"
    assert 'atomic_counter_usage_rejections_total{key_id="' in text
    assert 'limit="rate"' in text


@pytest.mark.sqlite
async def test_refused_keys_are_never_counted_against_anyone(tmp_path: Path) -> None:
    settings = make_settings(
        sqlite_path=tmp_path / "c.db",
        api_keys="key-one",
        rate_limit_per_second=1,
        rate_limit_burst=1,
        quota_per_day=1,
        quota_store="sqlite",
    )
    async for client in serve(settings):
        for n in range(20):
            answer = await client.post("/sqlite/x", headers={"x-api-key": f"guess-{n}"})
            assert answer.status_code == 401, "authentication comes before any limit"
        assert (await client.post("/sqlite/x", headers=KEYS["one"])).status_code == 200
        assert "usage_rejections_total{" not in (await client.get("/metrics")).text


@pytest.mark.sqlite
async def test_no_limit_unless_configured(tmp_path: Path) -> None:
    async for client in serve(make_settings(sqlite_path=tmp_path / "c.db")):
        answers = await asyncio.gather(*(client.post("/sqlite/free") for _ in range(100)))
        assert {a.status_code for a in answers} == {200}


# --- Daily quota ----------------------------------------------------------------------------


@pytest.mark.redis
async def test_quota_is_exact_across_two_service_processes(
    servers: Servers, tmp_path: Path
) -> None:
    redis = servers.shared(RedisServer)
    settings: dict[str, object] = {
        "sqlite_path": tmp_path / "c.db",
        "redis_url": redis.url,
        "api_keys": "key-one,key-two",
        "quota_per_day": 100,
        "quota_store": "redis",
    }
    services = [ServiceProcess(tmp_path / f"service-{n}", settings) for n in range(2)]
    try:
        for service in services:
            service.start()
        counter = f"quota-{tmp_path.name}"
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            answers = await asyncio.gather(
                *(
                    http.post(f"{services[n % 2].url}/redis/{counter}", headers=KEYS["one"])
                    for n in range(150)
                )
            )
            statuses = [a.status_code for a in answers]
            assert (statuses.count(200), statuses.count(429)) == (100, 50)
            assert sorted(a.json()["counter"] for a in answers if a.status_code == 200) == list(
                range(1, 101)
            )
            over = next(a for a in answers if a.status_code == 429)
            assert over.json() == {
                "error": "daily quota exceeded: 100 requests per UTC day",
                "limit": "quota",
            }
            assert over.headers["RateLimit-Policy"] == '"daily";q=100;w=86400'
            now = datetime.now(UTC)
            midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
            assert abs(int(over.headers["Retry-After"]) - (midnight - now).total_seconds()) < 60

            other = await http.post(f"{services[1].url}/redis/{counter}", headers=KEYS["two"])
            assert other.status_code == 200, "another key's quota is untouched"
            assert other.json()["counter"] == 101, "the 50 refused requests wrote nothing"
    finally:
        for service in services:
            service.stop()


@pytest.mark.redis
async def test_quota_store_down_fails_closed_with_503(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings = make_settings(
        sqlite_path=tmp_path / "c.db",
        redis_url=f"redis://127.0.0.1:{closed_port}/0",
        store_timeout_seconds=1.0,
        quota_per_day=10,
        quota_store="redis",
    )
    async for client in serve(settings):
        answer = await client.post("/sqlite/guarded")
        assert answer.status_code == 503
        assert "the daily quota cannot be checked" in answer.json()["error"]
        assert (await client.get("/sqlite/guarded")).status_code == 503
    async for client in serve(make_settings(sqlite_path=tmp_path / "c.db")):
        assert (await client.get("/sqlite/guarded")).json()["counter"] == 0


@pytest.mark.sqlite
async def test_quota_counts_every_counter_request_of_the_day(tmp_path: Path) -> None:
    settings = make_settings(sqlite_path=tmp_path / "c.db", quota_per_day=3, quota_store="sqlite")
    async for client in serve(settings):
        assert (await client.post("/sqlite/q")).status_code == 200
        assert (await client.get("/sqlite/q")).status_code == 200
        assert (await client.post("/sqlite/other")).status_code == 200
        refused = await client.post("/sqlite/q")
        assert refused.status_code == 429
        assert refused.json()["limit"] == "quota"
        assert 0 < int(refused.headers["Retry-After"]) <= 86400
        text = (await client.get("/metrics")).text
        assert 'atomic_counter_usage_rejections_total{key_id="shared",limit="quota"} 1.0' in text


@pytest.mark.sqlite
@pytest.mark.parametrize("quota_store", [None, "redis", "nosuch"])
async def test_a_quota_needs_an_enabled_quota_store(
    tmp_path: Path, quota_store: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        sqlite_path=tmp_path / "c.db", quota_per_day=10, quota_store=quota_store
    )
    with pytest.raises(SettingsError, match="QUOTA_STORE must name an enabled store"):
        async with LifespanManager(create_app(settings)):
            pass
    assert "QUOTA_STORE" in capsys.readouterr().err


@pytest.mark.sqlite
async def test_the_quota_resets_at_utc_midnight_and_says_when(tmp_path: Path) -> None:
    counters = Counters.from_settings(make_settings(sqlite_path=tmp_path / "c.db"), Metrics())
    now = datetime(2026, 3, 1, 23, 59, 30, 500_000, tzinfo=UTC)
    quota = DailyQuota(counters, "sqlite", limit=2, clock=lambda: now.timestamp())
    await counters.start()
    try:
        await quota.consume("caller")
        await quota.consume("caller")
        with pytest.raises(QuotaExceeded) as refused:
            await quota.consume("caller")
        assert refused.value.retry_after == 30
        assert refused.value.headers["ratelimit"] == '"daily";r=0;t=30'
        now += timedelta(seconds=30)
        await quota.consume("caller")  # a new UTC day, a new quota
    finally:
        await counters.close()


def test_plans_are_off_and_keys_last_a_day_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.idempotency_ttl_seconds == 86400
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (None, None)
    assert (settings.quota_per_day, settings.quota_store) == (None, None)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RATE_LIMIT_BURST": "10"}, "RATE_LIMIT_BURST"),
        ({"RATE_LIMIT_PER_SECOND": "0"}, "RATE_LIMIT_PER_SECOND"),
        ({"QUOTA_PER_DAY": "-5"}, "QUOTA_PER_DAY"),
        ({"IDEMPOTENCY_TTL_SECONDS": "0"}, "IDEMPOTENCY_TTL_SECONDS"),
    ],
)
def test_invalid_plan_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], named: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


@pytest.mark.sqlite
async def test_each_days_quota_counter_expires_after_its_day(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    counters = Counters.from_settings(make_settings(sqlite_path=path), Metrics())
    now = time.time()
    quota = DailyQuota(counters, "sqlite", limit=5, clock=lambda: now)
    await counters.start()
    try:
        await quota.consume("caller")
    finally:
        await counters.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, value, expires_at FROM counters").fetchall()
    midnight = (int(now) // 86_400 + 1) * 86_400
    assert [(value, expires_at) for _, value, expires_at in rows] == [(1, midnight + GRACE_SECONDS)]
    assert "quota:caller" in rows[0][0]


quota_of_two = sqlite_client(api_keys="key-one", quota_per_day=2, quota_store="sqlite")


async def test_a_batch_counts_as_one_request(quota_of_two: httpx.AsyncClient) -> None:
    batch = {"operations": [{"id": f"b-{i}"} for i in range(5)]}
    answers = [
        await quota_of_two.post("/sqlite", json=batch, headers=KEYS["one"]) for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    read = await quota_of_two.get("/sqlite/b-0", headers=KEYS["one"])
    assert read.status_code == 429, "the quota counts every request, reads too"
