"""Where job secrets' values come from: the control plane's own environment or a mounted directory.

A job spec names secrets (`secrets: [HF_TOKEN]`); their values never enter the job record, the onstart
command, the instance's create-time env (which vast stores and shows in listings) or any log. The agent
receives them in the answer to its claim, over the API, and hands them to the job's environment only.
Sources, first match wins: `VASTFLEET_SECRET_<NAME>` in the server's environment, then a file `<NAME>` in
`directory` (a Kubernetes Secret mounted as files).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from vastfleet.errors import BadInput

ENV_PREFIX = "VASTFLEET_SECRET_"


class SecretSource:
    def __init__(self, env: Mapping[str, str] | None = None, directory: Path | None = None) -> None:
        self._env = os.environ if env is None else env
        self._directory = directory

    def _value(self, name: str) -> str | None:
        value = self._env.get(ENV_PREFIX + name)
        if value:
            return value
        if self._directory is not None:
            path = self._directory / name
            if path.is_file():
                return path.read_text().rstrip("\n")
        return None

    def missing(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if self._value(n) is None]

    def check(self, names: Iterable[str]) -> None:
        """BadInput naming the secrets the control plane does not hold (never their values)."""
        absent = self.missing(names)
        if absent:
            raise BadInput(
                f"secrets: {', '.join(absent)} not known to the control plane "
                f"(set {ENV_PREFIX}<NAME> in the server's environment)"
            )

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        names = list(names)
        self.check(names)
        return {n: self._value(n) or "" for n in names}
