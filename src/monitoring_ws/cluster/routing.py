"""Commands through any node: the node that got the HTTP call asks the node holding the
agent, over Redis pub/sub, and waits for the answer on its own channel.

Request (to ``{prefix}node:{holder}``): ``{"type": "command", "requestId", "replyTo",
"agentId", "command", "args", "timeoutMs", "requestedBy"}``. Answer (to
``{prefix}node:{replyTo}``): ``{"type": "result", "requestId", "outcome"}`` or
``{"type": "result", "requestId", "error": {"code", "message", "commandId"?}}``. The holder
runs the command as its own (and keeps its record). Redis unreachable: the call fails at
once with ``ClusterUnavailableError`` (503); no answer in time: ``CommandTimeoutError``.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import coredis
import trio
from coredis.exceptions import RedisError

from ..clock import wall_ms
from ..protocol.payloads import NAME
from ..transports import (
    AgentGoneError,
    AgentNotConnectedError,
    ClusterUnavailableError,
    CommandNotSupportedError,
    CommandOrder,
    CommandOutcome,
    CommandTimeoutError,
    CommandTooLargeError,
    InvalidCommandError,
    Requester,
    ShuttingDownError,
    StateUnavailableError,
    TransportError,
)

if TYPE_CHECKING:
    from ..host.presence import AgentInfo
    from .presence import RedisRegistry

__all__ = ["NodeRouter"]

log = logging.getLogger("monitoring_ws.cluster")
#: Extra time the asking node waits beyond the command's timeout (the hops through Redis).
MARGIN_S = 2.0
PUBLISH_TIMEOUT_S = 1.0
_ERRORS: dict[str, type[TransportError]] = {
    cls.code: cls
    for cls in (
        AgentNotConnectedError,
        CommandNotSupportedError,
        CommandTooLargeError,
        InvalidCommandError,
        ShuttingDownError,
        StateUnavailableError,
        TransportError,
    )
}


class LocalCommands(Protocol):
    """This node's own way to its agents (the gateway's ``WebSocketTransport``)."""

    async def submit_here(self, order: CommandOrder) -> tuple[str, str]:
        """Send without waiting; the command's id and state once its record is durable."""
        ...

    async def send_here(self, order: CommandOrder) -> CommandOutcome: ...


class NodeRouter:
    """Sends commands to other nodes and answers theirs."""

    def __init__(
        self,
        client: coredis.Redis[str],
        node: str,
        presence: RedisRegistry[Any],
        *,
        prefix: str = "mws:",
    ) -> None:
        self.client = client
        self.node = node
        self.presence = presence
        self.prefix = prefix
        self._waiting: dict[str, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self._serving: tuple[trio.Nursery, LocalCommands] | None = None

    async def locate(self, agent_id: str) -> AgentInfo | None:
        return await self.presence.locate(agent_id)

    def _channel(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    async def send(self, node: str, order: CommandOrder) -> CommandOutcome:
        """Run the order on ``node``, which holds its agent: the answer, or TransportError."""
        return _answer(await self._ask(node, order, wait=True))

    async def submit(self, node: str, order: CommandOrder) -> dict[str, Any]:
        """Have ``node`` send the command without waiting: ``{"commandId", "state"}`` once
        its record is on that node's disk."""
        answer = await self._ask(node, order, wait=False)
        accepted = answer.get("accepted")
        if isinstance(accepted, dict):
            return accepted
        _answer(answer)  # raises the error the holder sent
        raise TransportError(f"node {node} gave no answer to a submit")

    async def _ask(self, node: str, order: CommandOrder, *, wait: bool) -> dict[str, Any]:
        """Publish the order to ``node``; its answer, within the command's timeout when
        waiting for the outcome, else within the time a submit takes."""
        request_id, agent_id = str(uuid.uuid4()), order.agent_id
        timeout_s = order.timeout_s if wait else PUBLISH_TIMEOUT_S
        request = {
            "type": "command",
            "requestId": request_id,
            "replyTo": self.node,
            "agentId": agent_id,
            "command": order.command,
            "args": dict(order.args),
            "timeoutMs": order.timeout_ms,
            "requestedBy": order.requester.to_json(),
            "commandId": order.command_id,
            "again": order.again,
            "streamOutput": order.stream_output,
            "wait": wait,
        }
        if order.intent is not None:  # sealed with the rest; the holder relays it as is
            request["intent"] = dict(order.intent)
        done, answers = trio.Event(), list[dict[str, Any]]()
        self._waiting[request_id] = (done, answers)
        try:
            try:
                with trio.fail_after(PUBLISH_TIMEOUT_S):
                    receivers = await self.client.publish(
                        self._channel(node), self.presence.seal.seal(request, wall_ms())
                    )
            except (RedisError, OSError, trio.TooSlowError) as exc:
                raise ClusterUnavailableError(
                    f"agent {agent_id} is on node {node}, and Redis cannot reach it now "
                    f"({type(exc).__name__}); retry when Redis is back"
                ) from None
            if not receivers:
                raise AgentNotConnectedError(f"agent {agent_id}'s node {node} is not listening")
            with trio.move_on_after(timeout_s + MARGIN_S):
                await done.wait()
        finally:
            del self._waiting[request_id]
        if not answers:
            raise CommandTimeoutError(
                f"no answer from node {node} within {timeout_s + MARGIN_S:g} s", request_id
            )
        return answers[0]

    def on_result(self, message: dict[str, Any]) -> None:
        waiting = self._waiting.get(str(message.get("requestId")))
        if waiting is not None:
            done, answers = waiting
            answers.append(message)
            done.set()

    def on_command(self, message: dict[str, Any]) -> None:
        if self._serving is None:
            return
        nursery, local = self._serving
        nursery.start_soon(self._serve_request, local, message)

    async def _serve_request(self, local: LocalCommands, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "result", "requestId": message.get("requestId")}
        try:
            asked_by = Requester.from_json(message["requestedBy"])
            order = CommandOrder(
                message["agentId"],
                message["command"],
                dict(message["args"]),
                int(message["timeoutMs"]),
                attrs.evolve(asked_by, address=f"{asked_by.address} via {message['replyTo']}"),
                _command_id(message.get("commandId")),
                message.get("again") is True,
                message.get("streamOutput") is True,
                message.get("intent") if isinstance(message.get("intent"), dict) else None,
            )
            if message.get("wait") is False:
                command_id, state = await local.submit_here(order)
                reply["accepted"] = {"commandId": command_id, "state": state}
            else:
                reply["outcome"] = (await local.send_here(order)).to_json()
        except TransportError as exc:
            reply["error"] = {"code": exc.code, "message": str(exc), **exc.extra}
        except (KeyError, TypeError, ValueError) as exc:
            reply["error"] = {"code": "bad_request", "message": f"malformed request: {exc}"}
        try:
            with trio.fail_after(PUBLISH_TIMEOUT_S):
                await self.client.publish(
                    self._channel(str(message.get("replyTo"))),
                    self.presence.seal.seal(reply, wall_ms()),
                )
        except (RedisError, OSError, trio.TooSlowError, ValueError) as exc:  # ValueError: seal
            log.warning("could not answer node %s: %s", message.get("replyTo"), exc)

    async def run(self, local: LocalCommands) -> None:
        """Serve other nodes' requests through ``local`` until cancelled."""
        async with trio.open_nursery() as nursery:
            self._serving = nursery, local
            try:
                await trio.sleep_forever()
            finally:
                self._serving = None


def _answer(message: dict[str, Any]) -> CommandOutcome:
    outcome = message.get("outcome")
    if isinstance(outcome, dict):
        error = outcome.get("error") or {}
        return CommandOutcome(
            command_id=outcome["commandId"],
            ok=bool(outcome["ok"]),
            duration_ms=int(outcome["durationMs"]),
            result=outcome.get("result"),
            error_code=error.get("code"),
            error_message=error.get("message"),
        )
    error = message.get("error") or {}
    code, text = str(error.get("code")), str(error.get("message"))
    command_id = error.get("commandId")
    if code == CommandTimeoutError.code:
        raise CommandTimeoutError(text, command_id or "")
    if code == AgentGoneError.code:
        raise AgentGoneError(text, command_id or "")
    raise _ERRORS.get(code, TransportError)(text)


def _command_id(value: Any) -> str | None:
    """A forwarded order's chosen id, if it is one (the sender's service checked it)."""
    if value is None:
        return None
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError("commandId is not a command id")
    return value
