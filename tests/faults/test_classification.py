"""Driver errors that mean a broken connection are outages (503, a warning), not bugs."""

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from app.stores.broken import connection_broken
from testing.stores import NullStore
from tests.api.test_store_faults import serve_with
from tests.conftest import make_settings

pytestmark = pytest.mark.sqlite

UVLOOP = (
    "unable to perform operation on <TCPTransport closed=True reading=False>; the handler is closed"
)
ASYNCMY = "Transport does not expose socket instance"


class _ClosedTransportStore(NullStore):
    """Raises, on each call, the error its `error` names, as a driver on a reset connection."""

    name: ClassVar[str] = "closed"
    enabled_by: ClassVar[str] = "CLOSED_STORE"
    errors: ClassVar[dict[str, BaseException]] = {
        "uvloop": RuntimeError(UVLOOP),
        "asyncmy": RuntimeError(ASYNCMY),
        "bug": RuntimeError("dictionary changed size during iteration"),
    }

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        raise self.errors[key]


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("driver", ["uvloop", "asyncmy"])
async def test_a_closed_transport_is_a_503_logged_as_unavailable_without_traceback(
    driver: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async for http in serve_with(
        make_settings(sqlite_path=tmp_path / "c.db"), _ClosedTransportStore
    ):
        capsys.readouterr()
        response = await http.post(f"/closed/{driver}")
        assert response.status_code == 503
        assert response.json() == {"error": "store 'closed' is unavailable: connection broken"}
        logged = lines(capsys.readouterr().out)
    assert not [line for line in logged if line["message"] == "store failed"]
    warning = next(line for line in logged if line["message"] == "store unavailable")
    assert warning["level"] == "WARNING"
    assert warning["reason"] == "connection broken"
    assert "exc_info" not in warning


async def test_any_other_runtime_error_is_still_logged_as_a_bug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async for http in serve_with(
        make_settings(sqlite_path=tmp_path / "c.db"), _ClosedTransportStore
    ):
        capsys.readouterr()
        assert (await http.post("/closed/bug")).status_code == 503
        logged = lines(capsys.readouterr().out)
    failed = next(line for line in logged if line["message"] == "store failed")
    assert "Traceback" in failed["exc_info"]


def test_only_the_exact_type_and_the_drivers_own_wording_match() -> None:
    assert connection_broken(RuntimeError(UVLOOP))
    assert connection_broken(RuntimeError(ASYNCMY))
    assert not connection_broken(RuntimeError("something else " + ASYNCMY))

    class Subclass(RuntimeError):
        pass

    assert not connection_broken(Subclass(ASYNCMY))
    assert not connection_broken(ValueError(ASYNCMY))
