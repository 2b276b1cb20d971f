"""``/healthz`` and ``/readyz`` for load balancers and orchestrators: no token, no detail
beyond a word per check (docs/operations.md, "Health")."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import attrs
from quart import Quart, Response

from ..plugins import Plugin

__all__ = ["HEALTH_PATHS", "Readiness", "add_health_routes"]

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


@attrs.define
class Readiness:
    """What the server itself knows: listening yet, draining already."""

    listening: bool = False
    draining: bool = False


def add_health_routes(
    app: Quart, readiness: Readiness, plugins: Callable[[], Sequence[Plugin]]
) -> None:
    @app.get("/healthz")
    async def alive() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def ready() -> tuple[Mapping[str, object], int] | Response:
        checks = {"listeners": readiness.listening and not readiness.draining}
        for plugin in plugins():
            for name, fine in plugin.checks().items():
                checks[f"{plugin.name}.{name}"] = fine
        words = {name: "ok" if fine else "failing" for name, fine in checks.items()}
        if readiness.draining:
            words["listeners"] = "draining"
        ok = all(checks.values())
        return {"status": "ready" if ok else "not_ready", "checks": words}, 200 if ok else 503
