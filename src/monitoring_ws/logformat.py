"""``--log-format json``: one JSON object per log line, for log shippers.

Fields: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, and where a line is
about one of them ``agent_id``, ``session_id``, ``command_id``, ``address``, ``node``
(passed with ``extra=``). Messages carry no secrets: nothing logs a key, a token or a
master secret, in either format.
"""

from __future__ import annotations

import json
import logging
import time

__all__ = ["CONTEXT_FIELDS", "JsonFormatter", "setup_logging"]

#: What a log call may attach with ``extra=``, in this order.
CONTEXT_FIELDS = ("agent_id", "session_id", "command_id", "address", "node")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = {
            "ts": f"{created}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup_logging(*, verbose: bool = False, log_format: str = "text") -> None:
    """The root logger: DEBUG with ``verbose`` else INFO, as text or JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
