"""``SSMTransport``: commands through AWS Systems Manager (SendCommand, then polling).

boto3 is blocking: every call runs in a worker thread under a ``CapacityLimiter``.
Region, credentials and endpoint come from boto3's usual chain, so
``AWS_ENDPOINT_URL_SSM`` points it at a local endpoint. The command mapping is in
docs/transports.md.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio
from botocore.exceptions import BotoCoreError, ClientError

from ..allowlist import AllowList, AllowListError
from ..transports import (
    AgentListing,
    AgentNotConnectedError,
    CommandNotSupportedError,
    CommandOrder,
    CommandOutcome,
    CommandTimeoutError,
    TransportError,
)
from .inventory import SSMInventory

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ssm import SSMClient

__all__ = ["SSM_MAPPED_COMMANDS", "SSM_SHELL", "SSMPolicy", "SSMTransport", "is_instance_id"]

#: SendCommand takes at most this many instance ids.
MAX_BATCH = 50
_INSTANCE_ID = re.compile(r"(?:i|mi)-[0-9a-f]{8,17}")
DOCUMENT = "AWS-RunShellScript"
# SSM's terminal invocation states; anything else is still on its way.
_TERMINAL = {
    "Success",
    "Failed",
    "TimedOut",
    "Cancelled",
    "Undeliverable",
    "Terminated",
    "DeliveryTimedOut",
    "ExecutionTimedOut",
    "Cancelling",
}
_ERROR_CODES = {
    "Failed": "failed",
    "TimedOut": "timeout",
    "DeliveryTimedOut": "delivery_timeout",
    "ExecutionTimedOut": "timeout",
    "Cancelled": "cancelled",
    "Cancelling": "cancelled",
    "Undeliverable": "undeliverable",
    "Terminated": "terminated",
}
T = TypeVar("T")


def is_instance_id(agent_id: str) -> bool:
    """Whether SSM can address this agent: an EC2 (``i-``) or managed (``mi-``) instance id."""
    return _INSTANCE_ID.fullmatch(agent_id) is not None


#: Commands with a fixed SSM mapping: what ``ssm_safe_commands`` may name.
SSM_MAPPED_COMMANDS = frozenset({"ping"})
#: Shell over SSM: its own command name, never ``run`` (docs/transports.md).
SSM_SHELL = "ssm_shell"


@attrs.frozen
class SSMPolicy:
    """Which commands may go to SSM, where they run as root with no agent allow-list.

    ``safe_commands`` names commands with a fixed SSM mapping that may go there (only
    ``ping`` has one). ``ssm_shell`` runs shell lines, each allowed word for word by
    ``shell_allowed`` (the agent's matcher) and sent quoted; empty, the default, is off.
    ``run`` never goes to SSM: its allow-list lives on the agent.
    """

    safe_commands: frozenset[str] = frozenset({"ping"})
    shell_allowed: AllowList = attrs.field(factory=AllowList)

    @classmethod
    def from_settings(cls, safe_commands: Iterable[str], shell_allowed: Iterable[str]) -> SSMPolicy:
        """From ``ssm_safe_commands`` and ``ssm_shell_allowed``; ValueError says what is wrong."""
        safe = frozenset(safe_commands)
        if "run" in safe:
            raise ValueError(
                "ssm_safe_commands: 'run' never goes to SSM (its allow-list lives on the "
                f"agent); allow shell lines for {SSM_SHELL} in ssm_shell_allowed instead"
            )
        unknown = sorted(safe - SSM_MAPPED_COMMANDS)
        if unknown:
            mapped = ", ".join(sorted(SSM_MAPPED_COMMANDS))
            raise ValueError(f"ssm_safe_commands: {unknown} have no SSM mapping (mapped: {mapped})")
        try:
            return cls(safe, AllowList.parse(shell_allowed))
        except AllowListError as exc:
            raise ValueError(f"ssm_shell_allowed: {exc}") from None

    def refusal(self, command: str) -> str | None:
        """Why ``command`` may not go to SSM; None when it may."""
        if command == "run":
            return (
                "'run' never goes to SSM (its allow-list lives on the agent); "
                f"use {SSM_SHELL} with ssm_shell_allowed"
            )
        if command == SSM_SHELL:
            return (
                None if self.shell_allowed else f"{SSM_SHELL} is off (ssm_shell_allowed is empty)"
            )
        if command not in self.safe_commands:
            safe = ", ".join(sorted(self.safe_commands)) or "none"
            return f"{command!r} is not SSM-safe (ssm_safe_commands: {safe})"
        return None

    def shell_lines(self, command: str, args: Mapping[str, Any]) -> list[str]:
        """The ``AWS-RunShellScript`` lines for an allowed command."""
        refused = self.refusal(command)
        if refused is not None:
            raise CommandNotSupportedError(refused)
        if command == "ping":
            return ["echo pong"]
        if command != SSM_SHELL:
            raise CommandNotSupportedError(f"{command!r} has no SSM mapping")
        lines = args.get("commands")
        if not isinstance(lines, list) or not lines or not all(isinstance(x, str) for x in lines):
            raise CommandNotSupportedError(f'{SSM_SHELL} takes args {{"commands": ["line", ...]}}')
        quoted = []
        for line in lines:
            arguments = self.shell_allowed.allows_line(line)
            if arguments is None:
                raise CommandNotSupportedError(
                    f"{SSM_SHELL}: {line[:200]!r} is not allowed by ssm_shell_allowed"
                )
            # The shell sees each argument quoted: no expansion, no second command.
            quoted.append(shlex.join(arguments))
        return quoted


class SSMTransport:
    """Reaches EC2 instances through SSM; seconds per command instead of milliseconds."""

    name = "ssm"
    max_batch = MAX_BATCH

    def __init__(
        self,
        client: SSMClient | None = None,
        *,
        ec2: EC2Client | None = None,
        max_concurrent_calls: int = 8,
        poll_first_s: float = 0.1,
        poll_max_s: float = 2.0,
        policy: SSMPolicy | None = None,
    ) -> None:
        self._client = client
        self._ec2: EC2Client | None = ec2
        self.policy = SSMPolicy() if policy is None else policy
        self._limiter = trio.CapacityLimiter(max_concurrent_calls)
        self.poll_first_s = poll_first_s
        self.poll_max_s = poll_max_s
        self.inventory = SSMInventory(self._blocking)

    @property
    def client(self) -> SSMClient:
        if self._client is None:
            import boto3  # noqa: PLC0415 - slow to import; only needed once used

            self._client = boto3.client("ssm")
        return self._client

    def health(self) -> dict[str, Any]:
        # Whether boto3 has a region is known without a call; credentials are checked by AWS.
        region = None if self._client is None else self._client.meta.region_name
        commands = sorted(self.policy.safe_commands)
        if self.policy.shell_allowed:
            commands.append(SSM_SHELL)
        health = {"ok": True, "commands": commands, "region": region}
        if self.inventory.error is not None:
            health["listError"] = self.inventory.error
        if self.inventory.tags_error is not None:
            health["tagsError"] = self.inventory.tags_error
        return health

    async def list_agents(self) -> list[AgentListing]:
        """Managed instances SSM reports (cached a minute) with their EC2 tags as labels,
        and those that answered here."""
        return await self.inventory.listing(lambda: self.client, lambda: self.ec2)

    @property
    def ec2(self) -> EC2Client:
        """For instances' tags (``ec2:DescribeTags``); the SSM client's region."""
        if self._ec2 is None:
            import boto3  # noqa: PLC0415 - slow to import; only needed once used

            self._ec2 = boto3.client("ec2", region_name=self.client.meta.region_name)
        return self._ec2

    async def describe_agent(self, agent_id: str) -> AgentListing | None:
        if not is_instance_id(agent_id):
            return None
        return next((a for a in await self.list_agents() if a.agent_id == agent_id), None)

    async def can_reach(self, agent_id: str, command: str) -> bool:
        return self.refusal(agent_id, command) is None

    def refusal(self, agent_id: str, command: str) -> str | None:
        """Why this transport will not carry ``command`` to ``agent_id``; None if it will."""
        if not is_instance_id(agent_id):
            return f"{agent_id} is not an EC2 instance id"
        return self.policy.refusal(command)

    async def _call(self, fn: Callable[..., T], **kwargs: Any) -> T:
        return await trio.to_thread.run_sync(functools.partial(fn, **kwargs), limiter=self._limiter)

    async def _blocking(self, fn: Callable[[], T]) -> T:
        # Abandoned when cancelled: a listing must not hold an API request for boto3's
        # minute-long default timeouts (the thread finishes on its own).
        return await trio.to_thread.run_sync(fn, limiter=self._limiter, abandon_on_cancel=True)

    async def send_command(self, order: CommandOrder) -> CommandOutcome:
        agent_id, timeout_s = order.agent_id, order.timeout_s
        if not is_instance_id(agent_id):
            raise AgentNotConnectedError(
                f"{agent_id} is not an EC2 instance id: SSM cannot reach it"
            )
        lines = self.policy.shell_lines(order.command, order.args)
        started = trio.current_time()
        command_id = await self._send([agent_id], lines, timeout_s)
        return await self._answer(agent_id, command_id, command_id, started, timeout_s)

    async def send_batch(
        self, orders: Sequence[CommandOrder]
    ) -> list[CommandOutcome | TransportError]:
        """One SendCommand for up to 50 instances (one command: the first order's), then
        each instance's invocation on its own. With several instances a record's id is
        ``CommandId:InstanceId`` (one SSM command, a record per instance)."""
        if not 0 < len(orders) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1-{MAX_BATCH} orders")
        first = orders[0]
        answers: list[CommandOutcome | TransportError] = []
        sendable = [o for o in orders if is_instance_id(o.agent_id)]
        started = trio.current_time()
        sent: str | None = None
        failure: TransportError = AgentNotConnectedError("not sent")
        try:
            lines = self.policy.shell_lines(first.command, first.args)
            if sendable:
                sent = await self._send([o.agent_id for o in sendable], lines, first.timeout_s)
        except TransportError as exc:
            failure = exc
        answered: dict[str, CommandOutcome | TransportError] = {}
        if sent is not None:
            shared = sent

            async def one(agent_id: str) -> None:
                record_id = shared if len(sendable) == 1 else f"{shared}:{agent_id}"
                try:
                    answered[agent_id] = await self._answer(
                        agent_id, shared, record_id, started, first.timeout_s
                    )
                except TransportError as exc:
                    answered[agent_id] = exc

            async with trio.open_nursery() as nursery:
                for order in sendable:
                    nursery.start_soon(one, order.agent_id)
        for order in orders:
            if not is_instance_id(order.agent_id):
                message = f"{order.agent_id} is not an EC2 instance id: SSM cannot reach it"
                answers.append(AgentNotConnectedError(message))
            else:
                answers.append(answered[order.agent_id] if sent is not None else failure)
        return answers

    async def _send(self, instance_ids: list[str], lines: list[str], timeout_s: float) -> str:
        """SendCommand; the SSM command id."""
        try:
            sent = await self._call(
                self.client.send_command,
                InstanceIds=instance_ids,
                DocumentName=DOCUMENT,
                Parameters={"commands": lines},
                TimeoutSeconds=max(30, math.ceil(timeout_s)),  # SSM's minimum
            )
        except ClientError as exc:
            if _code(exc) in {"InvalidInstanceId", "InvalidInstanceInformationFilterValue"}:
                where = ", ".join(instance_ids[:5])
                raise AgentNotConnectedError(f"SSM cannot reach {where}: {exc}") from None
            raise TransportError(f"SSM SendCommand failed: {exc}") from None
        except BotoCoreError as exc:
            raise TransportError(f"SSM SendCommand failed: {exc}") from None
        return str(sent["Command"]["CommandId"])

    async def _answer(
        self, agent_id: str, command_id: str, record_id: str, started: float, timeout_s: float
    ) -> CommandOutcome:
        invocation = await self._poll(agent_id, command_id, started + timeout_s)
        if invocation is None:
            await self._cancel(agent_id, command_id)
            raise CommandTimeoutError(f"no SSM result within {timeout_s:g} s", record_id)
        self.inventory.answered(agent_id)
        return _outcome(record_id, invocation, trio.current_time() - started)

    async def _poll(self, agent_id: str, command_id: str, deadline: float) -> dict[str, Any] | None:
        delay = self.poll_first_s
        while trio.current_time() < deadline:
            try:
                invocation: dict[str, Any] = dict(
                    await self._call(
                        self.client.get_command_invocation,
                        CommandId=command_id,
                        InstanceId=agent_id,
                    )
                )
            except ClientError as exc:
                # Right after SendCommand the invocation may not exist yet (eventual consistency).
                if _code(exc) != "InvocationDoesNotExist":
                    raise TransportError(f"SSM GetCommandInvocation failed: {exc}") from None
            else:
                if invocation.get("Status") in _TERMINAL:
                    return invocation
            await trio.sleep(min(delay, max(0.0, deadline - trio.current_time())))
            delay = min(delay * 2, self.poll_max_s)
        return None

    async def _cancel(self, agent_id: str, command_id: str) -> None:
        # Best effort: the command is reported as timed out either way.
        with contextlib.suppress(ClientError, BotoCoreError):
            await self._call(
                self.client.cancel_command, CommandId=command_id, InstanceIds=[agent_id]
            )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _outcome(command_id: str, invocation: Mapping[str, Any], elapsed_s: float) -> CommandOutcome:
    status = str(invocation.get("Status"))
    result = {
        "status": status,
        "exitCode": invocation.get("ResponseCode"),
        "stdout": invocation.get("StandardOutputContent", ""),
        "stderr": invocation.get("StandardErrorContent", ""),
    }
    duration_ms = int(elapsed_s * 1000)
    if status == "Success":
        return CommandOutcome(command_id, True, duration_ms, result=result)
    details = invocation.get("StatusDetails") or status
    return CommandOutcome(
        command_id,
        False,
        duration_ms,
        result=result,
        error_code=_ERROR_CODES.get(status, "failed"),
        error_message=f"SSM: {details}",
    )
