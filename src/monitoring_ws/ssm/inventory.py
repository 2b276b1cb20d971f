"""What SSM can list: its managed instances (``DescribeInstanceInformation``, asked at
most once a minute) with their EC2 tags as labels (``DescribeTags``), and the instances
that answered commands sent from here."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
import trio
from botocore.exceptions import BotoCoreError, ClientError

from ..protocol.labels import MAX_LABELS, LabelError, check_key, check_value
from ..transports import AgentListing

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef
    from mypy_boto3_ssm import SSMClient

__all__ = ["SSMInventory"]

#: How long a listing from AWS is reused (every GET /api/agents would call it otherwise).
LIST_CACHE_S = 60.0
#: Instances listed at most (pages of 50) and remembered from commands at most.
MAX_LISTED = 10_000
#: A listing slower than this is given up (the API answers with what it had).
LIST_TIMEOUT_S = 5.0


def _ms(value: Any) -> int | None:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else None


class SSMInventory:
    """Cached and bounded; a failing AWS call keeps the last listing and says why."""

    def __init__(self, run: Callable[[Callable[[], Any]], Awaitable[Any]]) -> None:
        #: Runs a blocking boto3 call in a worker thread (the transport's limiter), given
        #: up on when cancelled.
        self._run = run
        self._listed: dict[str, AgentListing] = {}
        self._listed_at: float | None = None
        self._answered: OrderedDict[str, int] = OrderedDict()
        #: Why the last listing call failed (None when it worked).
        self.error: str | None = None
        #: Why the last tags call failed: the instances' labels are then unknown.
        self.tags_error: str | None = None
        self._lock = trio.Lock()

    def answered(self, instance_id: str) -> None:
        """An instance answered a command: it is listed, with when."""
        self._answered[instance_id] = int(time.time() * 1000)
        self._answered.move_to_end(instance_id)
        while len(self._answered) > MAX_LISTED:
            self._answered.popitem(last=False)

    async def listing(
        self, client: Callable[[], SSMClient], ec2: Callable[[], EC2Client] | None = None
    ) -> list[AgentListing]:
        async with self._lock:  # one call at a time; callers meanwhile get its answer
            now = trio.current_time()
            if self._listed_at is None or now - self._listed_at >= LIST_CACHE_S:
                self._listed_at = now
                try:
                    with trio.move_on_after(LIST_TIMEOUT_S) as waited:
                        self._listed = await self._run(lambda: _describe(client()))
                        self.error = None
                        if ec2 is not None and self._listed:
                            self._listed = await self._labelled(self._listed, ec2)
                    if waited.cancelled_caught:
                        self.error = f"DescribeInstanceInformation took over {LIST_TIMEOUT_S:g} s"
                except (ClientError, BotoCoreError) as exc:
                    self.error = f"DescribeInstanceInformation failed: {exc}"[:300]
        listed = dict(self._listed)
        for instance_id, seen_ms in self._answered.items():
            known = listed.get(instance_id)
            if known is None:
                listed[instance_id] = AgentListing(
                    instance_id, False, seen_ms, {"source": "answered a command"}
                )
            elif known.last_seen_ms is None or seen_ms > known.last_seen_ms:
                listed[instance_id] = AgentListing(
                    instance_id, known.connected, seen_ms, known.details
                )
        return [listed[key] for key in sorted(listed)]

    async def _labelled(
        self, listed: dict[str, AgentListing], ec2: Callable[[], EC2Client]
    ) -> dict[str, AgentListing]:
        """The EC2 instances' tags as their labels; those that break the label rules
        (``Name=web 1``, ``aws:...``) are left out. A failure leaves labels unknown."""
        ids = [i for i in listed if i.startswith("i-")]
        try:
            tags = await self._run(lambda: _tags(ec2(), ids))
        except (ClientError, BotoCoreError) as exc:
            self.tags_error = f"DescribeTags failed: {exc}"[:300]
            return listed
        self.tags_error = None
        return {
            instance_id: attrs.evolve(listing, labels=tags.get(instance_id, {}))
            if instance_id.startswith("i-")
            else listing
            for instance_id, listing in listed.items()
        }


def _tags(ec2: EC2Client, instance_ids: list[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for start in range(0, len(instance_ids), 200):  # a filter takes 200 values
        filters: list[FilterTypeDef] = [
            {"Name": "resource-type", "Values": ["instance"]},
            {"Name": "resource-id", "Values": instance_ids[start : start + 200]},
        ]
        for page in ec2.get_paginator("describe_tags").paginate(Filters=filters):
            for tag in page.get("Tags", []):
                labels = found.setdefault(str(tag.get("ResourceId")), {})
                key, value = tag.get("Key"), tag.get("Value", "")
                try:
                    if len(labels) < MAX_LABELS:
                        labels[check_key(key)] = check_value(str(key), value)
                except LabelError:
                    continue
    return found


def _describe(client: SSMClient) -> dict[str, AgentListing]:
    listed: dict[str, AgentListing] = {}
    for page in client.get_paginator("describe_instance_information").paginate():
        for info in page.get("InstanceInformationList", []):
            instance_id = info.get("InstanceId")
            if not instance_id:
                continue
            details = {
                "pingStatus": info.get("PingStatus"),
                "platform": info.get("PlatformName"),
                "computerName": info.get("ComputerName"),
                "ssmAgentVersion": info.get("AgentVersion"),
            }
            listed[instance_id] = AgentListing(
                instance_id,
                info.get("PingStatus") == "Online",
                _ms(info.get("LastPingDateTime")),
                {k: v for k, v in details.items() if v is not None},
            )
            if len(listed) >= MAX_LISTED:
                return listed
    return listed
