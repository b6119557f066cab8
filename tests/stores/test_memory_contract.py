"""The in-memory test store runs the contract suites the real stores run.

It stands in for a store in the API tests, so it must keep the same promises: exact values
under concurrency, caps and the counter limit, and idempotency records.
"""

import pytest

from app.stores import CounterStore
from testing.stores import MemoryStore
from tests.stores.test_contract import *  # noqa: F403 - the suite, collected again here
from tests.stores.test_idempotency_contract import *  # noqa: F403
from tests.stores.test_lifecycle_contract import *  # noqa: F403
from tests.stores.test_range_contract import *  # noqa: F403


@pytest.fixture
def store() -> CounterStore:
    return MemoryStore()
