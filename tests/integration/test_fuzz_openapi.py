"""Schemathesis over the server's own OpenAPI document: no generated request gets a 5xx.

`aeserve serve` runs on the shipped model with an API key. Every generated case is sent three
times over a real socket: without the key (the auth layer answers), with it, and with it and the
real model name and version in the path (so the routes behind an existing model are reached, not
only their 404s). Unloading is left to generated names: unloading the real model would leave
the rest of the run with nothing to reach.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.helpers import ROOT, server_process

KEY = "fuzz-key"
REAL_PATH = {"name": "breast-cancer", "version": "1"}
EXAMPLES_PER_OPERATION = 20
SENT: Counter[int] = Counter()  # status codes of every request sent

def _openapi_document() -> dict:
    """The document the server serves at /openapi.json: built by the same app, in process."""
    import tempfile
    from pathlib import Path

    from aeserve.serving.app import create_app
    from aeserve.serving.settings import Settings

    with tempfile.TemporaryDirectory() as empty:
        return create_app(Settings(models_dir=Path(empty), poll_interval_s=0)).openapi()


schema = schemathesis.openapi.from_dict(_openapi_document())
# .npy bodies have no generator here; tests/integration/test_hostile_inputs.py covers them.
pytestmark = pytest.mark.filterwarnings("ignore:Skipped test cases with unsupported payload")


@pytest.fixture(scope="module")
def live_server():
    with server_process(ROOT / "models", AESERVE_API_KEY=KEY) as server:
        yield server
    if SENT:  # the fuzzing test ran: it must have sent many requests, none answered 5xx
        statuses = dict(sorted(SENT.items()))
        print(f"\nschemathesis: {sum(SENT.values())} requests, statuses {statuses}")
        assert sum(SENT.values()) > 300 and not any(status >= 500 for status in SENT)


def test_the_document_is_the_one_served(live_server):
    import httpx

    served = httpx.get(f"{live_server.url}/openapi.json", headers={"X-API-Key": KEY}).json()
    assert served == _openapi_document()


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_5xx(case, live_server):
    def send(headers: dict[str, str] | None = None) -> None:
        response = case.call_and_validate(base_url=live_server.url, headers=headers,
                                          checks=[not_a_server_error])
        SENT[response.status_code] += 1

    send()
    keyed = {"X-API-Key": KEY}
    send(keyed)
    if case.path_parameters and not case.path.endswith("/unload"):
        for name, value in REAL_PATH.items():
            if name in case.path_parameters:
                case.path_parameters[name] = value
        send(keyed)
    assert live_server.process.poll() is None  # and the server is still up
