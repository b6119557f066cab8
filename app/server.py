"""The container's entry point: `python -m app.server` runs uvicorn with the deployment's timeouts.

Minimal version: the hardening work replaces it (SIGTERM turns /readyz 503, waits
SHUTDOWN_DELAY_SECONDS, then drains) and keeps this interface.
"""

import os

import uvicorn

# Longer than the ALB's idle timeout (60 s, deploy/ecs/cloudformation.yaml): the load
# balancer, not the server, must be the one to close an idle connection, or a request
# sent on a connection the server is closing gets a 502.
KEEP_ALIVE_SECONDS = 65
# In-flight requests get this long after SIGTERM; compose's stop_grace_period and ECS's
# stopTimeout are longer (tests/deploy check it).
GRACEFUL_SHUTDOWN_SECONDS = 20


def main() -> None:
    """Serve app.main:app on HOST (default loopback) and PORT or UVICORN_PORT (default 8000)."""
    port = os.environ.get("PORT") or os.environ.get("UVICORN_PORT") or "8000"
    uvicorn.run(
        "app.main:app",
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(port),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        proxy_headers=True,
        server_header=False,
    )


if __name__ == "__main__":
    main()
