"""SSM alone: the websocket plugin disabled, the host still serves, SSM carries commands
and lists what it can (moto's server; Stubber for the listing moto lacks)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import boto3
import httpx
import pytest
import trio
from botocore.stub import Stubber
from trio_websocket import ConnectionRejected, open_websocket_url

from monitoring_ws.host.config import config_from_document
from monitoring_ws.host.server import Running, serve_host
from monitoring_ws.ssm import SSMTransport

from .test_ssm import INSTANCE, moto_ssm

__all__ = ["moto_ssm"]


async def test_ssm_runs_alone(moto_ssm: str, nursery: trio.Nursery, tmp_path: Path) -> None:
    document = {
        "server": {"listen": "127.0.0.1:0", "state_dir": str(tmp_path)},
        "transports": {"ssm": True},
        "plugins": {"websocket": {"enabled": False}},
    }
    config = config_from_document(document, "monitoring.toml", environ={})
    running: Running = await nursery.start(partial(serve_host, config, handle_signals=False))
    assert running.agent_urls == ()  # no WebSocket endpoint without the plugin
    async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as http:
        transports = (await http.get("/api/transports")).json()["transports"]
        assert [t["name"] for t in transports] == ["ssm"]
        assert (await http.get("/api/websocket/agents")).status_code == 404
        sent = await http.post(f"/api/agents/{INSTANCE}/commands", json={"command": "ping"})
        assert sent.status_code == 200, sent.text
        assert sent.json()["transport"] == "ssm"
        command_id = sent.json()["commandId"]
        # The host keeps SSM's record, who asked included.
        record = (await http.get(f"/api/commands/{command_id}")).json()
        assert record["transport"] == "ssm"
        assert record["state"] == "succeeded"
        assert record["requestedBy"]["address"] == "127.0.0.1"
        json_type = {"Content-Type": "application/json"}
        metrics = (await http.get("/metrics")).text  # the host counts what SSM carried
        assert 'monitoring_ws_commands_total{outcome="succeeded",transport="ssm"} 1.0' in metrics
        assert 'monitoring_ws_command_duration_seconds_count{transport="ssm"} 1.0' in metrics
        history = (await http.get("/api/commands")).json()["commands"]
        assert [(r["commandId"], r["transport"]) for r in history] == [(command_id, "ssm")]
        refused = await http.delete(f"/api/commands/{command_id}", headers=json_type)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "command_finished"
        # moto has no DescribeInstanceInformation: SSM lists who answered, and says why.
        listing = (await http.get("/api/agents")).json()
        assert listing["transports"] == ["ssm"]
        [agent] = listing["agents"]
        assert agent["agentId"] == INSTANCE
        assert agent["transports"] == {"ssm": False}
        assert agent["lastSeen"] is not None
        health = (await http.get("/api/transports")).json()["transports"][0]
        assert "DescribeInstanceInformation failed" in health["listError"]
        # Waiting for nothing is for transports that keep records: SSM answers only waiting.
        later = {"command": "ping", "wait": False}
        refused = await http.post(f"/api/agents/{INSTANCE}/commands", json=later)
        assert refused.status_code == 404
        assert '"wait": true' in refused.json()["error"]["message"]
    url = running.api_url.replace("http", "ws", 1) + "/agent"
    with pytest.raises(ConnectionRejected):
        async with open_websocket_url(url, connect_timeout=5):
            pass


async def test_ssm_lists_its_managed_instances() -> None:
    client = boto3.client(
        "ssm", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    pinged = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    with Stubber(client) as stubber:
        stubber.add_response(
            "describe_instance_information",
            {
                "InstanceInformationList": [
                    {"InstanceId": INSTANCE, "PingStatus": "Online", "LastPingDateTime": pinged},
                    {"InstanceId": "i-0fff000000000000f", "PingStatus": "ConnectionLost"},
                ]
            },
        )
        transport = SSMTransport(client=client)
        listed = {a.agent_id: a for a in await transport.list_agents()}
        again = await transport.list_agents()  # cached: no second call (Stubber would fail)
    assert listed[INSTANCE].connected is True
    assert listed[INSTANCE].last_seen_ms == int(pinged.timestamp() * 1000)
    assert listed["i-0fff000000000000f"].connected is False
    assert len(again) == 2
    assert transport.health().get("listError") is None


async def test_instances_are_labelled_with_their_ec2_tags(moto_ssm: str) -> None:
    """Tags from EC2 (moto's server), the listing from SSM (Stubber: moto lacks it)."""
    ec2 = boto3.client("ec2", endpoint_url=moto_ssm)
    tags = [
        {"Key": "env", "Value": "prod"},
        {"Key": "team.example.com/owner", "Value": "payments"},
        {"Key": "Name", "Value": "web 1"},  # a space: not a label value
        {"Key": "aws:cloudformation:stack-name", "Value": "x"},  # ':' in a key: left out
    ]
    started = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=2,
        MaxCount=2,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    tagged, other = [i["InstanceId"] for i in started["Instances"]]
    ec2.delete_tags(Resources=[other], Tags=[{"Key": t["Key"]} for t in tags])
    client = boto3.client("ssm")
    with Stubber(client) as stubber:
        stubber.add_response(
            "describe_instance_information",
            {
                "InstanceInformationList": [
                    {"InstanceId": tagged, "PingStatus": "Online"},
                    {"InstanceId": other, "PingStatus": "Online"},
                    {"InstanceId": "mi-0123456789abcdef0", "PingStatus": "Online"},
                ]
            },
        )
        transport = SSMTransport(client=client, ec2=ec2)
        listed = {a.agent_id: a for a in await transport.list_agents()}
    assert listed[tagged].labels == {"env": "prod", "team.example.com/owner": "payments"}
    assert listed[other].labels == {}
    assert listed["mi-0123456789abcdef0"].labels is None  # not an EC2 instance: unknown
    assert transport.health().get("tagsError") is None
