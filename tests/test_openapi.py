"""/openapi.json describes every route the app has, no more; schemathesis sends what the
description allows to a real server (bounded examples): no 5xx, nothing outside it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from monitoring_ws.gateway.openapi import websocket_paths
from monitoring_ws.host.api.openapi import openapi_document

from .conftest import StartServer
from .support import processes


class _Described:
    """What the websocket plugin adds to the description (its paths, nothing built)."""

    name = "websocket"

    def openapi_paths(self) -> dict[str, Any]:
        return websocket_paths()


DOCUMENT = openapi_document([_Described()])  # type: ignore[list-item]
# Left out: an endless stream, and a WebSocket upgrade (tests/test_channels*.py test it).
SCHEMA = (
    schemathesis.openapi.from_dict(DOCUMENT)
    .exclude(path="/api/events")
    .exclude(path="/api/agents/{agentId}/channel")
)
if os.environ.get("HYPOTHESIS_PROFILE") != "deep":
    # Schemathesis's coverage phase (every boundary case the description defines) costs
    # about a minute of collection here; the thorough run keeps it (docs/security.md).
    SCHEMA.config.phases.coverage.enabled = False


async def test_the_description_matches_the_routes(start_server: StartServer) -> None:
    running = await start_server()
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        served = (await http.get("/openapi.json")).json()
        assert served == DOCUMENT  # what the server says is what this test checks
        page = await http.get("/docs")
        assert page.headers["content-type"].startswith("text/html")
        assert "/api/agents/{agentId}/commands" in page.text
    app = running.running.app
    routes = {
        (method.lower(), re.sub(r"<(\w+)>", lambda m: "{" + _camel(m.group(1)) + "}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    described = {(method, path) for path, item in DOCUMENT["paths"].items() for method in item}
    assert routes == described, (routes - described, described - routes)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server process, no agents: every route answers from its own state."""
    tmp_path: Path = tmp_path_factory.mktemp("openapi")
    port = processes.free_port()
    server = processes.server(tmp_path, port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@SCHEMA.parametrize()
# Derandomized: the same examples every run (a steady suite); HYPOTHESIS_PROFILE=deep does
# not change them, widen max_examples here to search further.
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_server_keeps_to_its_description(case: Any, server_url: str) -> None:
    case.call_and_validate(base_url=server_url, headers={"Content-Type": "application/json"})


def test_every_operation_has_its_own_operation_id() -> None:
    ids = [
        described["operationId"]
        for methods in DOCUMENT["paths"].values()
        for described in methods.values()
    ]
    assert len(ids) == len(set(ids))
    # The host's and the websocket plugin's are named, not made from their paths.
    assert not [op for op in ids if op.startswith(("getApi", "postApi", "deleteApi"))]
    assert DOCUMENT["paths"]["/api/jobs"]["post"]["operationId"] == "createJob"
    assert DOCUMENT["paths"]["/healthz"]["get"]["security"] == []
    assert DOCUMENT["paths"]["/readyz"]["get"]["security"] == []
