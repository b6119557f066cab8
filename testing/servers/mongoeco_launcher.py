"""Serves mongoeco's MongoDB wire protocol until SIGTERM. Runs under mongoeco's Python 3.13.

Usage: python mongoeco_launcher.py PORT [DATA_FILE]. With DATA_FILE the data lives in
mongoeco's SQLite engine there, so a stop and a start keep every counter; without it,
in memory.

Transactions. mongoeco's SQLite engine runs a multi-document transaction as one SQLite
transaction that holds the whole engine: atomic, isolated, rolled back on abort, but one at
a time. While it is open, every other command fails at once ("... has an active transaction
bound to another session") with no code and no label, where MongoDB would let the others
run and abort only a conflicting transaction, with `WriteConflict` (112) labelled
`TransientTransactionError` so that the driver runs it again. The launcher answers a
transaction that cannot start while another holds the engine the same way, with that
`WriteConflict`. A command outside any transaction still fails while one is open (making it
wait instead starves the driver's small pool: the open transaction then cannot send its
next command), so on this server plain commands must not run beside transactions. Nothing
else changes: the engine still applies each transaction atomically itself.
"""

import asyncio
import signal
import sys
from typing import Any

from mongoeco.engines.memory import MemoryEngine
from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.errors import OperationFailure
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

_ENGINE_BUSY = "active transaction bound to another session"
_WRITE_CONFLICT = 112


def _busy(exc: BaseException) -> bool:
    return _ENGINE_BUSY in str(exc)


def _busy_answer(result: dict[str, Any]) -> bool:
    """A command's answer that is the engine's refusal: as a command error or a write error."""
    if result.get("ok") == 0 and _ENGINE_BUSY in str(result.get("errmsg", "")):
        return True
    errors = result.get("writeErrors") or []
    return any(_ENGINE_BUSY in str(error.get("errmsg", "")) for error in errors)


def _in_transaction(body: dict[str, Any]) -> bool:
    # Every command of a transaction carries autocommit: false (the first one too).
    return body.get("autocommit") is False


def _write_conflict(exc: BaseException) -> OperationFailure:
    return OperationFailure(
        f"WriteConflict: another transaction holds the engine ({exc})",
        code=_WRITE_CONFLICT,
        details={"codeName": "WriteConflict"},
        error_labels=("TransientTransactionError",),
    )


def _answer_transactions_like_mongodb(server: AsyncMongoEcoProxyServer) -> None:
    executor = server._executor
    prepare = executor._build_request_context
    execute = executor.execute_prepared

    def build_request_context(body: dict[str, Any], **kwargs: Any) -> Any:
        # A transaction's first command starts the engine's transaction while it is prepared.
        try:
            return prepare(body, **kwargs)
        except Exception as exc:
            if _busy(exc) and _in_transaction(body):
                raise _write_conflict(exc) from exc
            raise

    async def execute_prepared(context: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await execute(context)
        except Exception as exc:
            if _busy(exc) and _in_transaction(context.raw_body):
                raise _write_conflict(exc) from exc
            raise
        if _busy_answer(result) and _in_transaction(context.raw_body):
            raise _write_conflict(Exception(result))
        return result

    executor._build_request_context = build_request_context
    executor.execute_prepared = execute_prepared


async def serve(port: int, data_file: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    engine = SQLiteEngine(data_file) if data_file else MemoryEngine()
    async with AsyncMongoEcoProxyServer(engine=engine, host="127.0.0.1", port=port) as server:
        _answer_transactions_like_mongodb(server)
        print(f"mongoeco listening on {server.address.uri}", flush=True)
        await stop.wait()
    print("mongoeco stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
