"""Example job specs shipped with the package: `vastfleet demo` runs `count.yaml` from here, so an installed
wheel needs no source tree. `examples/count.yaml` at the top of the repository is the same file for users to
read and copy (a test keeps the two equal)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def example_path(name: str) -> Path:
    """The file of a shipped example. The wheel installs unpacked, so the resource is a real file."""
    return Path(str(resources.files(__package__) / name))
