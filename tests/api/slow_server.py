"""`python -m tests.api.slow_server`: the real server, with a slow store beside the real ones."""

import asyncio
import sys
from typing import ClassVar

from app.server import main
from testing.stores import NullStore
from tests.api.fake_stores import with_stores

SLOW_SECONDS = 1.0


class SlowStore(NullStore):
    """Takes a second per increment; ids starting with `stall` never answer."""

    name: ClassVar[str] = "slow"
    enabled_by: ClassVar[str] = "SLOW_STORE"

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        await asyncio.sleep(3600 if key.startswith("stall") else SLOW_SECONDS)
        return await super().increment(key, by, cap, floor, expires_at)


if __name__ == "__main__":
    sys.exit(main(with_stores(SlowStore)))
