"""vastfleet: run GPU training jobs on the vast.ai marketplace cheaply and safely."""

__version__ = "0.1.0"
