"""The job queue on Redis: the store, the state machine (the only writer of a job's state), leases and
the RQ action queues. Knows no marketplace."""

from vastfleet.queue.actions import ACTION_QUEUES, action_queue
from vastfleet.queue.keys import Keys
from vastfleet.queue.lease import Lease
from vastfleet.queue.machine import ALLOWED, allowed
from vastfleet.queue.quarantine import JobQuarantined
from vastfleet.queue.store import JobStore, new_job_id

__all__ = ["ACTION_QUEUES", "ALLOWED", "JobQuarantined", "JobStore", "Keys", "Lease", "action_queue", "allowed", "new_job_id"]
