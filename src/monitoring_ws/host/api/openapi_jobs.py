"""The description of labels, selectors and jobs in ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from ...openapi import ID_PATTERN, agent_param, json_body, operation, query, ref
from ...protocol.labels import MAX_LABELS
from ..jobs.spec import JOB_KEYS, TargetState
from .output import OUTPUT_TYPE

#: ``GET /api/jobs/:id/output``'s lines: a command's (``OUTPUT_LINE``), tagged; then the job.
JOB_OUTPUT_LINE: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["output", "dropped", "keepalive", "end"]},
        "agentId": {"type": "string"},
        "commandId": {"type": "string"},
        "job": {"type": "object"},
    },
}

__all__ = ["JOB_SCHEMAS", "SELECTOR_PATTERN", "job_paths"]

_COUNT = {"type": "integer", "maximum": 999_999_999}
_CONCURRENCY = {
    "description": 'a number of agents, or a percentage of those matched ("10%")',
    "anyOf": [
        {**_COUNT, "minimum": 1},
        {"type": "string", "pattern": "^[1-9][0-9]{0,8}$"},
        {"type": "string", "pattern": "^(100|[1-9][0-9]?)%$"},
    ],
}
_ERRORS = {
    "description": "failures allowed before the job stops sending: a number, or a "
    'percentage of the agents matched ("10%")',
    "anyOf": [
        {**_COUNT, "minimum": 0},
        {"type": "string", "pattern": "^(0|[1-9][0-9]{0,8})$"},
        {"type": "string", "pattern": "^(100|[1-9]?[0-9])%$"},
    ],
}
# Kubernetes' rules as patterns (protocol/labels.py checks the same, and the lengths).
_NAME = "[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = "[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?(?:[.][a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?){0,2}"
KEY = f"(?:{_PREFIX}/)?{_NAME}"
VALUE = f"(?:{_NAME})?"
_REQUIREMENT = (
    rf"\s*(?:!\s*{KEY}|{KEY}(?:\s*(?:==?|!=)\s*{VALUE}"
    rf"|\s+(?:in|notin)\s*\(\s*{VALUE}\s*(?:,\s*{VALUE}\s*){{0,15}}\))?)\s*"
)
#: A label selector: at most 16 requirements here (the server takes 64).
SELECTOR_PATTERN = f"^{_REQUIREMENT}(?:,{_REQUIREMENT}){{0,15}}$"
_LABELS = {
    "type": "object",
    "maxProperties": MAX_LABELS,
    "propertyNames": {"pattern": f"^{KEY}$"},
    "additionalProperties": {"type": "string", "pattern": f"^{VALUE}$"},
}
_SELECTOR = {
    "description": "a label selector (env=prod,role in (web,api),!canary), or an object "
    "whose parts all apply",
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": SELECTOR_PATTERN},
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "anyOf": [{"required": ["ids"]}, {"required": ["glob"]}, {"required": ["labels"]}],
            "properties": {
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "pattern": ID_PATTERN},
                },
                "glob": {"type": "string", "minLength": 1, "maxLength": 256},
                "labels": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 4096,
                    "pattern": SELECTOR_PATTERN,
                },
                "transport": {"type": "string", "pattern": ID_PATTERN},
            },
        },
    ],
}
JOB_SCHEMAS: dict[str, Any] = {
    "Selector": _SELECTOR,
    "Labels": _LABELS,
    "JobRequest": {
        "type": "object",
        "required": ["selector", "command"],
        "additionalProperties": False,
        "properties": {
            "selector": ref("Selector"),
            "command": {"type": "string", "pattern": ID_PATTERN},
            "args": {"type": "object", "additionalProperties": ref("JsonValue")},
            "timeoutMs": {"type": "integer", "minimum": 1, "maximum": 3_600_000},
            "maxConcurrency": {**_CONCURRENCY, "default": "50"},
            "maxErrors": {**_ERRORS, "default": "0"},
            "offline": {"type": "string", "enum": ["skip", "wait"], "default": "skip"},
            "offlineWaitMs": {"type": "integer", "minimum": 1, "maximum": 7 * 86_400_000},
            "requestedBy": {"type": "string", "minLength": 1, "maxLength": 128},
            "streamOutput": {"type": "boolean"},
            "intent": ref("SignedIntent"),
        },
    },
    "Job": {
        "type": "object",
        "required": ["jobId", "state", "counts", "progress", "matched"],
        "properties": {
            "jobId": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["pending", "running", "succeeded", "failed", "stopped", "cancelled"],
            },
            "matched": {"type": "integer"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "progress": {"type": "object"},
            "stopReason": {"type": ["string", "null"]},
            "firstError": {"type": ["object", "null"]},
            "agents": {"type": "array", "items": {"type": "object"}},
        },
    },
}
assert set(JOB_SCHEMAS["JobRequest"]["properties"]) == JOB_KEYS  # noqa: S101 - one list
_JOB_ID = {"type": "string", "pattern": ID_PATTERN}


def job_paths() -> dict[str, Any]:
    job_param = {
        "name": "jobId",
        "in": "path",
        "required": True,
        "schema": _JOB_ID,
        "description": "the job",
    }
    accepted = {
        "type": "object",
        "required": ["jobId", "state", "matched", "location"],
        "properties": {
            "jobId": {"type": "string"},
            "state": {"type": "string"},
            "matched": {"type": "integer"},
            "location": {"type": "string"},
        },
    }
    page = {
        "type": "object",
        "required": ["jobs", "next"],
        "properties": {
            "jobs": {"type": "array", "items": ref("Job")},
            "next": {"type": ["string", "null"]},
        },
    }
    states = [state.value for state in TargetState]
    return {
        "/api/jobs": {
            "post": operation(
                "Run a command on every agent a selector matches (202: the job)",
                "jobs",
                None,
                errors=(400, 403, 404, 413, 415, 429, 503),
                body=json_body(ref("JobRequest")),
                accepted=accepted,
                op="createJob",
            ),
            "get": operation(
                "Jobs, newest first",
                "jobs",
                page,
                errors=(400,),
                params=(
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page"),
                    query(
                        "cursor",
                        {"type": "string", "pattern": "^[0-9]{1,16}~" + ID_PATTERN[1:]},
                        "the previous page's next",
                    ),
                ),
                op="listJobs",
            ),
        },
        "/api/jobs/{jobId}/output": {
            "get": operation(
                "Every agent's output as NDJSON lines, each with agentId and commandId",
                "jobs",
                JOB_OUTPUT_LINE,
                errors=(400, 404),
                params=(
                    job_param,
                    query("follow", {"type": "string", "enum": ["true", "false"]}, "until it ends"),
                ),
                media=OUTPUT_TYPE,
                op="getJobOutput",
            )
        },
        "/api/jobs/{jobId}": {
            "get": operation(
                "A job and a page of its agents",
                "jobs",
                ref("Job"),
                errors=(400, 404),
                params=(
                    job_param,
                    query("state", {"type": "string", "enum": states}, "only agents in it"),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page"),
                    query(
                        "offset",
                        {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
                        "agents to skip",
                    ),
                ),
                op="getJob",
            ),
            "delete": operation(
                "Cancel a job: no new sends, running commands cancelled where possible",
                "jobs",
                ref("Job"),
                errors=(400, 404, 409, 415),
                params=(job_param,),
                op="cancelJob",
            ),
        },
        "/api/agents/{agentId}/labels": {
            "patch": operation(
                "Set (a string) or remove (null) the operator's labels of an agent",
                "agents",
                {"type": "object"},
                errors=(400, 403, 415),
                params=(agent_param(),),
                body=json_body(
                    {
                        "type": "object",
                        "required": ["labels"],
                        "additionalProperties": False,
                        "properties": {
                            "labels": {
                                "type": "object",
                                "minProperties": 1,
                                "maxProperties": MAX_LABELS,
                                "propertyNames": {"pattern": f"^{KEY}$"},
                                "additionalProperties": {
                                    "anyOf": [
                                        {"type": "null"},
                                        {"type": "string", "pattern": f"^{VALUE}$"},
                                    ]
                                },
                            }
                        },
                    }
                ),
                op="labelAgent",
            )
        },
    }
