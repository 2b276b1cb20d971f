"""The HTTP API, called with the standard library: keep-alive, JSON, the bearer token,
and a certificate pin checked before anything is sent."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from .settings import ClientSettings, CtlError

__all__ = ["STREAM_IDLE_S", "Api", "ApiError"]

#: A followed stream that sends nothing this long (the server sends a keepalive line
#: every 15 s) is taken for dropped, and opened again.
STREAM_IDLE_S = 60.0


class ApiError(CtlError):
    """The server said no: its status, error code and message."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.error_code, self.body = status, code, body


class Api:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self, timeout: float | None = None) -> http.client.HTTPConnection:
        timeout = self.settings.timeout_s if timeout is None else timeout
        if not self._https:
            return http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        context = ssl.create_default_context()
        if self.settings.cert_sha256 is not None:  # the pin decides, not the CAs
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(
            self._host, self._port, timeout=timeout, context=context
        )
        connection.connect()
        if self.settings.cert_sha256 is not None:
            assert isinstance(connection.sock, ssl.SSLSocket)  # noqa: S101 - https
            der = connection.sock.getpeercert(binary_form=True) or b""
            if not hmac.compare_digest(hashlib.sha256(der).hexdigest(), self.settings.cert_sha256):
                connection.close()
                raise CtlError(
                    f"the server at {self.settings.url} does not present the pinned "
                    "certificate: nothing was sent (check the pin, or who answers there)",
                    69,
                )
        return connection

    def call(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        """The JSON answer; raises ``ApiError`` for an error status, ``CtlError`` when the
        server cannot be reached."""
        target = self._target(path, params)
        headers = self._headers("application/json")
        data = None
        if method != "GET":
            headers["Content-Type"] = "application/json"
            data = json.dumps({} if body is None else body).encode()
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more
            try:
                if self._connection is None:
                    self._connection = self._connect()
                self._connection.request(method, target, body=data, headers=headers)
                response = self._connection.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise CtlError(f"{self.settings.url} closed the connection") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise CtlError(f"cannot reach {self.settings.url}: {exc}", 69) from None
        answer = _json_or_none(raw)
        if response.status >= 400:
            raise _api_error(response, answer)
        return answer

    def _target(self, path: str, params: dict[str, Any] | None) -> str:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return self._prefix + path + (f"?{urlencode(query)}" if query else "")

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        return headers

    @contextlib.contextmanager
    def open_stream(
        self, path: str, params: dict[str, Any], *, idle_s: float | None = None
    ) -> Iterator[http.client.HTTPResponse]:
        """A streamed GET on a connection of its own (the kept-alive one stays free for
        calls meanwhile, such as a cancel); ``idle_s``: reading raises ``TimeoutError``
        after that long without data (default: ``STREAM_IDLE_S``, several keepalives)."""
        try:
            connection = self._connect(STREAM_IDLE_S if idle_s is None else idle_s)
            connection.request("GET", self._target(path, params), headers=self._headers("*/*"))
            response = connection.getresponse()
        except CtlError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise CtlError(f"cannot reach {self.settings.url}: {exc}", 69) from None
        try:
            if response.status >= 400:
                raise _api_error(response, _json_or_none(response.read()))
            yield response
        finally:
            connection.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _api_error(response: http.client.HTTPResponse, answer: Any) -> ApiError:
    error = answer.get("error", {}) if isinstance(answer, dict) else {}
    message = error.get("message") or response.reason
    return ApiError(response.status, error.get("code") or "http_error", message, answer)


def segment(value: str) -> str:
    """A path segment, quoted."""
    return quote(value, safe="")
