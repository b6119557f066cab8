"""The dependencies' private names the code relies on, where no public API does the job.

Each such dependency has an upper-bounded pin in pyproject.toml. When a pin is raised, this
module says, naming the attribute, what the new release renamed or reshaped; a silent
rename would otherwise show up only at run time (a stray timer, a text/plain answer, a
Momento call that fails on every keyed increment).
"""

import asyncio
import inspect
from collections.abc import Callable, Iterator
from types import CodeType

import pytest
import uvicorn
from momento import CacheClientAsync
from momento.internal.aio import _scs_data_client, _scs_grpc_manager
from momento.internal.aio._utilities import make_metadata
from momento.internal.services import Service
from momento_wire_types import cacheclient_pb2, cacheclient_pb2_grpc, common_pb2
from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState

from app.server import BoundedHttpToolsProtocol
from app.stores import momento as momento_store


def _names_used(function: Callable[..., object]) -> set[str]:
    """Every global and attribute name `function` (and the functions inside it) uses."""

    def walk(code: CodeType) -> Iterator[str]:
        yield from code.co_names
        for constant in code.co_consts:
            if isinstance(constant, CodeType):
                yield from walk(constant)

    return set(walk(inspect.unwrap(function).__code__))


def _parameters(function: Callable[..., object]) -> list[str]:
    return list(inspect.signature(function).parameters)


def _require(owner: object, name: str) -> object:
    label = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", repr(owner))
    assert hasattr(owner, name), f"{label}.{name} is gone"
    return getattr(owner, name)


# --- uvicorn: app/server.py subclasses its httptools protocol -----------------------------


def test_uvicorn_httptools_protocol_still_takes_its_config_and_state() -> None:
    protocol = _require(httptools_impl, "HttpToolsProtocol")
    assert protocol is BoundedHttpToolsProtocol.__mro__[1]
    assert _parameters(httptools_impl.HttpToolsProtocol.__init__)[:4] == [
        "self",
        "config",
        "server_state",
        "app_state",
    ], "HttpToolsProtocol.__init__ changed its parameters"


@pytest.mark.parametrize(
    ("method", "parameters"),
    [
        ("connection_made", ["self", "transport"]),
        ("connection_lost", ["self", "exc"]),
        ("data_received", ["self", "data"]),
        ("on_message_begin", ["self"]),
        ("on_headers_complete", ["self"]),
        ("on_body", ["self", "body"]),
        ("on_message_complete", ["self"]),
        ("on_response_complete", ["self"]),
        ("send_400_response", ["self", "msg"]),
    ],
)
def test_uvicorn_httptools_protocol_methods_overridden_keep_their_signature(
    method: str, parameters: list[str]
) -> None:
    found = _require(httptools_impl.HttpToolsProtocol, method)
    assert callable(found)
    assert _parameters(found) == parameters, f"HttpToolsProtocol.{method} changed its signature"


def test_uvicorn_still_answers_an_unparsable_request_through_send_400_response() -> None:
    # The JSON 400 replaces that method: if data_received stopped calling it, uvicorn's
    # text/plain answer would come back.
    used = _names_used(httptools_impl.HttpToolsProtocol.data_received)
    assert "send_400_response" in used, "HttpToolsProtocol.data_received no longer calls it"
    assert "feed_data" in used, "HttpToolsProtocol.data_received no longer feeds the parser"


def test_uvicorn_httptools_protocol_still_has_the_state_the_server_reads() -> None:
    async def build() -> httptools_impl.HttpToolsProtocol:
        config = uvicorn.Config(lambda scope, receive, send: None, log_config=None)
        return httptools_impl.HttpToolsProtocol(config, ServerState(), {})

    protocol = asyncio.run(build())
    # The connection count and in-flight requests bound MAX_CONNECTIONS; the pipeline and
    # the current cycle tell when every earlier request has its answer; the loop and the
    # keep-alive delay arm the idle timer before a first request.
    for name in ("loop", "transport", "connections", "tasks", "pipeline", "cycle"):
        _require(protocol, name)
    assert isinstance(_require(protocol, "timeout_keep_alive"), int)
    assert "response_complete" in _names_used(httptools_impl.RequestResponseCycle.__init__), (
        "RequestResponseCycle.response_complete is gone"
    )


# --- Momento: the SetIf RPC rides on the SDK's data channel -------------------------------


def test_momento_client_still_has_a_data_client_with_a_stub_and_a_deadline() -> None:
    assert isinstance(CacheClientAsync.__dict__.get("_data_client"), property), (
        "CacheClientAsync._data_client is gone"
    )
    data_client = _require(_scs_data_client, "_ScsDataClient")
    assert _parameters(_require(data_client, "_build_stub")) == ["self"]  # type: ignore[arg-type]
    assert "_default_deadline_seconds" in _names_used(_scs_data_client._ScsDataClient.__init__), (
        "_ScsDataClient._default_deadline_seconds is gone"
    )
    assert "SetIf" in _names_used(cacheclient_pb2_grpc.ScsStub.__init__), "ScsStub.SetIf is gone"


def test_momento_set_if_wire_types_keep_their_fields() -> None:
    request = _require(cacheclient_pb2, "_SetIfRequest")
    fields = set(request.DESCRIPTOR.fields_by_name)  # type: ignore[attr-defined]
    missing = {"cache_key", "cache_body", "ttl_milliseconds", "absent", "equal", "absent_or_equal"}
    assert not missing - fields, f"_SetIfRequest lost {sorted(missing - fields)}"
    response = _require(cacheclient_pb2, "_SetIfResponse")
    result = response.DESCRIPTOR.oneofs_by_name["result"]  # type: ignore[attr-defined]
    assert "stored" in {field.name for field in result.fields}, "_SetIfResponse.stored is gone"
    for name in ("Absent", "Equal", "AbsentOrEqual"):
        _require(common_pb2, name)


def test_momento_channel_options_are_still_read_from_the_patched_functions() -> None:
    # The reconnect backoff is added by replacing these two module functions while the
    # client is built: each must still exist, take the gRPC configuration, and be looked
    # up in that module by the channel managers.
    managers: dict[str, Callable[..., object]] = {
        "grpc_data_channel_options_from_grpc_config": _scs_grpc_manager._DataGrpcManager.__init__,
        "grpc_control_channel_options_from_grpc_config": (
            _scs_grpc_manager._ControlGrpcManager.__init__
        ),
    }
    assert set(managers) == set(momento_store._CHANNEL_OPTION_BUILDERS)
    for name, manager in managers.items():
        build = _require(_scs_grpc_manager, name)
        assert _parameters(build) == ["grpc_config"], f"{name} changed its signature"  # type: ignore[arg-type]
        assert name in _names_used(manager), f"{manager.__qualname__} no longer calls {name}"


def test_momento_internal_helpers_keep_their_shape() -> None:
    # Imported by app/stores/momento.py from modules the SDK does not export: a move fails
    # that import, a change of shape fails here.
    assert _parameters(make_metadata) == ["cache_name"], "make_metadata changed its signature"
    _require(Service, "CACHE")
