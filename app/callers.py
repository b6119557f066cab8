"""Who is calling: a short, stable id per API key, safe to put in metrics, logs and store keys."""

import hashlib

SHARED_CALLER = "shared"
"""The one caller id every request gets when API_KEYS is unset."""


def caller_id(api_key: str | None, auth_enabled: bool) -> str:
    """The id of the API key that authenticated the request: 12 hex of its hash, never the key.

    Call it only after authentication passed, so `api_key` is one of API_KEYS.
    """
    if not auth_enabled:
        return SHARED_CALLER
    # 48 bits tell a handful of configured keys apart; the domain prefix keeps this hash
    # from matching any other system's plain sha256 of the same key.
    return hashlib.sha256(b"atomic-counter key id\0" + (api_key or "").encode()).hexdigest()[:12]
