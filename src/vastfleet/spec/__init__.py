"""Plain models every part shares: the job spec, the job record and its states, offers and instances.

Imports nothing of the project but `vastfleet.errors`.
"""

from vastfleet.spec.job import ACTIVE_STATES, TERMINAL_STATES, CheckpointRef, Job, JobEvent, JobState
from vastfleet.spec.jobspec import (
    Interruptible,
    JobSpec,
    Resources,
    Runtime,
    job_spec_from_dict,
    load_job_spec,
)
from vastfleet.spec.market import BidKind, CreateRequest, Instance, InstanceStatus, Offer, OfferQuery
from vastfleet.spec.summary import JobSummary

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "BidKind",
    "CheckpointRef",
    "CreateRequest",
    "Instance",
    "InstanceStatus",
    "Interruptible",
    "Job",
    "JobEvent",
    "JobSpec",
    "JobState",
    "JobSummary",
    "Offer",
    "OfferQuery",
    "Resources",
    "Runtime",
    "job_spec_from_dict",
    "load_job_spec",
]
