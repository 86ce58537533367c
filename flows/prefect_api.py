"""Start the Prefect API the flow will use in the background, so its start overlaps other work.

Without `PREFECT_API_URL` the first flow call starts Prefect's ephemeral server (a subprocess,
several seconds) and waits for it; started from a thread while the data is prepared, that wait
overlaps. The server is a process-wide singleton, so the flow later finds it running.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor


def _start() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.hello()  # a configured server answers; an ephemeral one is started first
        return str(client.api_url)


def start_api_in_background() -> Future[str]:
    """The API's URL, once it answers; call `.result()` before the flow."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefect-api")
    future = pool.submit(_start)
    pool.shutdown(wait=False)
    return future
