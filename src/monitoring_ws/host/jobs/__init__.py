"""Fleet jobs: one command to the agents a selector matches, with rate control
(docs/api.md, "Jobs")."""

from .runner import JobError, JobRunner
from .spec import JobSpec, JobSpecError, JobState, TargetState, parse_job
from .store import Job, JobStore, Target

__all__ = [
    "Job",
    "JobError",
    "JobRunner",
    "JobSpec",
    "JobSpecError",
    "JobState",
    "JobStore",
    "Target",
    "TargetState",
    "parse_job",
]
