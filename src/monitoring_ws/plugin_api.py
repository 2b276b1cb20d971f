"""Everything a server-side plugin may import, in one place (plugins/README.md).

A plugin of the ``monitoring_ws.plugins`` entry-point group imports from this module
only: the plugin interface and what the host shares, transports and their errors and
records, telemetry sinks and readers, Prometheus collectors, route helpers, the OpenAPI
toolkit and settings helpers. What is not here is the host's or another plugin's inside
and may change without notice. tests/test_plugin_api.py checks that the plugin
distributions in plugins/ keep to it. Agent command plugins import from
``monitoring_ws.agent.handlers`` instead.
"""

from __future__ import annotations

from .configbase import ConfigError, is_loopback, one_of, parse_hostport, positive, strings
from .host.command_service import Accepted, CommandService
from .host.jsonlines import RotatingJsonLines
from .host.metrics import MetricsCollector, ServerMetrics
from .host.plugins import (
    PLUGIN_GROUP,
    TOO_BIG,
    AsgiHandler,
    CommandRoute,
    HostContext,
    Plugin,
    PluginBase,
    PluginContext,
    PluginError,
    StartupError,
    WebSocketRoute,
)
from .host.presence import AgentInfo, LiveConnection, MemoryRegistry, Registry
from .host.router import Routed
from .host.telemetry import (
    LogBatch,
    MetricsSample,
    TelemetryHistory,
    TelemetryItem,
    TelemetryReader,
    TelemetrySink,
)
from .openapi import ERROR, agent_param, command_param, json_body, operation, query, ref
from .transports import (
    IN_PROCESS,
    AgentGoneError,
    AgentListing,
    AgentNotConnectedError,
    ClusterUnavailableError,
    CommandConflictError,
    CommandNotSupportedError,
    CommandOrder,
    CommandOutcome,
    CommandTimeoutError,
    CommandTooLargeError,
    InvalidCommandError,
    KeepsOutput,
    KeepsRecords,
    KnowsSessions,
    ListsAgents,
    Requester,
    SendsBatches,
    ShuttingDownError,
    StateUnavailableError,
    Transport,
    TransportError,
    UnknownCommandError,
)
from .transports.records import CommandRecord, CommandState, RecordQuery
from .web import (
    ID_RULE,
    MAX_BODY_BYTES,
    error,
    forbidden,
    int_arg,
    reach,
    reaches,
    run_command_request,
    token,
    transport_error,
)

__all__ = [
    "ERROR",
    "ID_RULE",
    "IN_PROCESS",
    "MAX_BODY_BYTES",
    "PLUGIN_GROUP",
    "TOO_BIG",
    "Accepted",
    "AgentGoneError",
    "AgentInfo",
    "AgentListing",
    "AgentNotConnectedError",
    "AsgiHandler",
    "ClusterUnavailableError",
    "CommandConflictError",
    "CommandNotSupportedError",
    "CommandOrder",
    "CommandOutcome",
    "CommandRecord",
    "CommandRoute",
    "CommandService",
    "CommandState",
    "CommandTimeoutError",
    "CommandTooLargeError",
    "ConfigError",
    "HostContext",
    "InvalidCommandError",
    "KeepsOutput",
    "KeepsRecords",
    "KnowsSessions",
    "ListsAgents",
    "LiveConnection",
    "LogBatch",
    "MemoryRegistry",
    "MetricsCollector",
    "MetricsSample",
    "Plugin",
    "PluginBase",
    "PluginContext",
    "PluginError",
    "RecordQuery",
    "Registry",
    "Requester",
    "RotatingJsonLines",
    "Routed",
    "SendsBatches",
    "ServerMetrics",
    "ShuttingDownError",
    "StartupError",
    "StateUnavailableError",
    "TelemetryHistory",
    "TelemetryItem",
    "TelemetryReader",
    "TelemetrySink",
    "Transport",
    "TransportError",
    "UnknownCommandError",
    "WebSocketRoute",
    "agent_param",
    "command_param",
    "error",
    "forbidden",
    "int_arg",
    "is_loopback",
    "json_body",
    "one_of",
    "operation",
    "parse_hostport",
    "positive",
    "query",
    "reach",
    "reaches",
    "ref",
    "run_command_request",
    "strings",
    "token",
    "transport_error",
]
