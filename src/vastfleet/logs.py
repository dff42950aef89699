"""The control plane's log: one line per decision or action, readable by default, one JSON object per line
for machines (`--log-format json`).

`event(logger, what, reason, job=..., epoch=..., instance=..., **more)` writes one line that says what was
decided or done, to which job, attempt and instance, and why. The text holds every field, so the line reads
whole wherever it goes (a test's caplog, Python's last-resort handler); the same fields travel on the record
as `vf` for the JSON formatter, which writes them as keys. `setup(level, fmt)` configures the process's
root logger once, for the foreground commands (`vastfleet server`); library code only ever logs.

Nothing secret is passed here: reasons name jobs, instances, offers and prices, never a token or a key.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

from vastfleet.errors import BadInput

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Chatty at INFO and below, and about their own plumbing: their warnings still show.
_QUIET = ("httpx", "httpcore", "urllib3", "botocore", "boto3", "s3transfer", "rq.worker", "rq.queue",
          "uvicorn.access", "asyncio")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def event(logger: logging.Logger, what: str, reason: str = "", *, job: str | None = None,
          epoch: int | None = None, instance: int | None = None, level: int = logging.INFO,
          **more: Any) -> None:
    """One decision or action on one line: `what job=J epoch=E instance=I [k=v ...]: reason`."""
    if not logger.isEnabledFor(level):
        return
    fields: dict[str, Any] = {"event": what, "job": job, "epoch": epoch, "instance": instance, **more}
    # a job's line always names its attempt and instance (`-`: none yet); a line about no job skips them
    named = {k: v for k, v in fields.items() if k != "event" and (v is not None or (
        job is not None and k in ("epoch", "instance")))}
    shown = "".join(f" {k}={'-' if v is None else v}" for k, v in named.items())
    logger.log(level, "%s%s%s", what, shown, f": {reason}" if reason else "",
               extra={"vf": {**fields, "reason": reason}})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and, for `event` lines, their fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        fields = getattr(record, "vf", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if v is not None and v != ""})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def parse_level(level: str) -> int:
    name = level.strip().upper()
    if name not in LEVELS:
        raise BadInput(f"--log-level {level!r}: use one of {', '.join(LEVELS)}")
    return int(getattr(logging, name))


def check_format(fmt: str) -> str:
    name = fmt.strip().lower()
    if name not in FORMATS:
        raise BadInput(f"--log-format {fmt!r}: use text (readable) or json (one object per line)")
    return name


def setup(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """The root logger writes `level` and above to `stream` (stderr) in the chosen format; replaces any
    handler set before, so a second call (tests) does not print each line twice."""
    number, name = parse_level(level), check_format(fmt)
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if name == "json" else logging.Formatter(_TEXT_FORMAT)
    if name == "text":
        formatter.default_msec_format = "%s.%03d"
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    logging.getLogger("vastfleet").setLevel(number)
    for noisy in _QUIET:
        logging.getLogger(noisy).setLevel(max(number, logging.WARNING))
