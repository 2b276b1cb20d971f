"""SSMTransport through boto3: moto's server for the real path, Stubber for what moto lacks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import trio
from botocore.stub import ANY, Stubber

from monitoring_ws.ssm import SSM_SHELL, SSMPolicy, SSMTransport, is_instance_id
from monitoring_ws.transports import (
    AgentNotConnectedError,
    CommandNotSupportedError,
    CommandOrder,
    CommandTimeoutError,
    TransportError,
)

from ..conftest import moto_server

INSTANCE = "i-0abc123def4567890"
COMMAND_ID = "8f0c9a3e-1d2b-4c5d-9e6f-0a1b2c3d4e5f"


@pytest.fixture
def moto_ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto in server mode on loopback, reached through boto3's own configuration."""
    with moto_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield endpoint


async def test_send_and_poll_against_moto(moto_ssm: str) -> None:
    transport = SSMTransport(poll_first_s=0.01)
    assert await transport.can_reach(INSTANCE, "ping")
    outcome = await transport.send_command(CommandOrder(INSTANCE, "ping", {}, 10000))
    assert outcome.ok is True
    assert outcome.result["status"] == "Success"
    assert len(outcome.command_id) == 36
    assert not await transport.can_reach(INSTANCE, "run")  # never, whatever the config
    assert not await transport.can_reach(INSTANCE, SSM_SHELL)  # off by default
    shell = SSMTransport(
        poll_first_s=0.01, policy=SSMPolicy.from_settings(["ping"], ["uptime", "df -h re:/.*"])
    )
    assert await shell.can_reach(INSTANCE, SSM_SHELL)
    lines = {"commands": ["uptime", "df -h /var"]}
    outcome = await shell.send_command(CommandOrder(INSTANCE, SSM_SHELL, lines, 10000))
    assert outcome.ok is True


async def test_what_ssm_cannot_carry_is_refused() -> None:
    transport = SSMTransport(client=boto3.client("ssm", region_name="us-east-1"))
    assert not await transport.can_reach("web-01", "ping")
    assert not await transport.can_reach(INSTANCE, "tail_log")
    with pytest.raises(AgentNotConnectedError):
        await transport.send_command(CommandOrder("web-01", "ping", {}, 1000))
    with pytest.raises(CommandNotSupportedError):
        await transport.send_command(CommandOrder(INSTANCE, "tail_log", {}, 1000))
    with pytest.raises(CommandNotSupportedError, match="never goes to SSM"):
        await transport.send_command(CommandOrder(INSTANCE, "run", {"commands": ["uptime"]}, 1000))
    with pytest.raises(CommandNotSupportedError, match="ssm_shell is off"):
        await transport.send_command(CommandOrder(INSTANCE, SSM_SHELL, {"commands": ["id"]}, 1000))
    assert transport.refusal(INSTANCE, "collect_metrics") == (
        "'collect_metrics' is not SSM-safe (ssm_safe_commands: ping)"
    )
    assert is_instance_id("mi-0123456789abcdef0")
    assert not is_instance_id("i-xyz")


def stubbed(responses: list[tuple[str, Any]]) -> tuple[SSMTransport, Stubber]:
    client = boto3.client(
        "ssm", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stubber = Stubber(client)
    stubber.add_response(
        "send_command",
        {"Command": {"CommandId": COMMAND_ID, "Status": "Pending"}},
        {
            "InstanceIds": [INSTANCE],
            "DocumentName": "AWS-RunShellScript",
            "Parameters": {"commands": ["echo pong"]},
            "TimeoutSeconds": ANY,
        },
    )
    for kind, value in responses:
        if kind == "error":
            stubber.add_client_error("get_command_invocation", service_error_code=value)
        else:
            stubber.add_response("get_command_invocation", value)
    stubber.activate()
    return SSMTransport(client=client, poll_first_s=0.01, poll_max_s=0.05), stubber


def invocation(status: str, **extra: Any) -> dict[str, Any]:
    return {"CommandId": COMMAND_ID, "InstanceId": INSTANCE, "Status": status, **extra}


async def test_invocation_does_not_exist_is_retried() -> None:
    transport, stubber = stubbed(
        [
            ("error", "InvocationDoesNotExist"),
            ("error", "InvocationDoesNotExist"),
            ("ok", invocation("InProgress")),
            ("ok", invocation("Success", ResponseCode=0, StandardOutputContent="pong\n")),
        ]
    )
    outcome = await transport.send_command(CommandOrder(INSTANCE, "ping", {}, 5000))
    assert outcome.ok is True
    assert outcome.result["stdout"] == "pong\n"
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("Failed", "failed"),
        ("TimedOut", "timeout"),
        ("Cancelled", "cancelled"),
        ("Undeliverable", "undeliverable"),
        ("DeliveryTimedOut", "delivery_timeout"),
        ("Terminated", "terminated"),
    ],
)
async def test_every_terminal_status_maps_to_a_result(status: str, code: str) -> None:
    transport, _ = stubbed([("ok", invocation(status, StatusDetails=status, ResponseCode=1))])
    outcome = await transport.send_command(CommandOrder(INSTANCE, "ping", {}, 5000))
    assert outcome.ok is False
    assert outcome.error_code == code
    assert outcome.result["status"] == status


async def test_timeout_cancels_the_command() -> None:
    transport, stubber = stubbed([("ok", invocation("InProgress")) for _ in range(200)])
    cancelled: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        cancelled.append(params)

    # Seen before the stubber answers (it has no answer queued for it at this point).
    stubber.client.meta.events.register("provide-client-params.ssm.CancelCommand", record)
    with trio.fail_after(5), pytest.raises(CommandTimeoutError) as info:
        await transport.send_command(CommandOrder(INSTANCE, "ping", {}, 300))
    assert info.value.command_id == COMMAND_ID
    assert cancelled == [{"CommandId": COMMAND_ID, "InstanceIds": [INSTANCE]}]


async def test_missing_aws_configuration_is_a_transport_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(TransportError, match="SendCommand failed"):
        await SSMTransport().send_command(CommandOrder(INSTANCE, "ping", {}, 1000))


def test_shell_lines_are_allowed_word_for_word_and_sent_quoted() -> None:
    policy = SSMPolicy.from_settings([], ["cat re:/var/log/app/[^/]+", "uptime"])
    assert policy.refusal("ping") is not None  # not SSM-safe in this policy
    assert policy.shell_lines(SSM_SHELL, {"commands": ["uptime", "cat /var/log/app/a.log"]}) == [
        "uptime",
        "cat /var/log/app/a.log",
    ]
    # What bash would expand is quoted: the shell sees one argument, never a command.
    assert policy.shell_lines(SSM_SHELL, {"commands": ["cat '/var/log/app/$(reboot)'"]}) == [
        "cat '/var/log/app/$(reboot)'"
    ]
    for line in ("cat /var/log/app/../../etc/shadow", "uptime; reboot", "cat /etc/shadow"):
        with pytest.raises(CommandNotSupportedError, match="not allowed"):
            policy.shell_lines(SSM_SHELL, {"commands": [line]})
    with pytest.raises(CommandNotSupportedError, match="takes args"):
        policy.shell_lines(SSM_SHELL, {"command": "uptime"})


@pytest.mark.parametrize(
    ("safe", "shell", "message"),
    [
        (["run"], [], "never goes to SSM"),
        (["collect_metrics"], [], "no SSM mapping"),
        ([], ["re:cat /x/[^ ]+"], "ssm_shell_allowed"),
    ],
)
def test_policy_settings_are_checked(safe: list[str], shell: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SSMPolicy.from_settings(safe, shell)


async def test_a_batch_is_one_send_command_with_a_record_per_instance(moto_ssm: str) -> None:
    transport = SSMTransport(poll_first_s=0.01)
    instances = [f"i-0abc123def456789{n}" for n in range(3)]
    orders = [CommandOrder(i, "ping", {}, 10000) for i in [*instances, "web-01"]]
    answers = await transport.send_batch(orders)
    outcomes = answers[:3]
    assert all(getattr(o, "ok", False) for o in outcomes), answers
    ids = [o.command_id for o in outcomes]  # type: ignore[union-attr]
    shared = {i.partition(":")[0] for i in ids}
    assert len(shared) == 1  # one SendCommand ...
    assert ids == [f"{next(iter(shared))}:{i}" for i in instances]  # ... a record each
    assert isinstance(answers[3], AgentNotConnectedError)
    sent = boto3.client("ssm").list_commands()["Commands"]
    assert [sorted(c["InstanceIds"]) for c in sent] == [instances]
    with pytest.raises(ValueError, match="1-50"):
        await transport.send_batch([CommandOrder(i, "ping", {}, 1000) for i in instances * 17])
