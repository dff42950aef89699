"""The bounds of what a job spec may hold, and the text checks its string fields share.

Why bounds at all: a spec is stored with its job, read back on every listing and scheduler pass, and its
`env` travels to the instance in the agent's claim answer. An unbounded spec (a 100 MB `env` value was
accepted once) makes every read of the queue slow for everyone, so each field has a cap and the whole
spec has one, all far above what a real job needs. Why text checks: a NUL in `env` crashed the agent
(C strings end there), and a newline in a one-line field (an image name, a region) can forge a second
line in whatever later prints or passes it on. Imports nothing of the project.
"""

from __future__ import annotations

import re

# Whole spec, as compact JSON: the sum of the field caps below stays under it, so this is a backstop.
MAX_SPEC_BYTES = 64 * 1024
# env: enough for any real job's settings; the whole env rides in the claim answer to the agent.
MAX_ENV_ENTRIES = 128
MAX_ENV_NAME_CHARS = 128
MAX_ENV_VALUE_BYTES = 16 * 1024
MAX_ENV_TOTAL_BYTES = 32 * 1024
MAX_SECRETS = 64
MAX_GPU_NAMES = 32  # vastfleet knows fewer models than this; duplicates and aliases fit
MAX_GPU_NAME_CHARS = 64
MAX_REGIONS = 64
MAX_REGION_CHARS = 64

# One-line fields refuse every control character (C0, DEL, C1), the Unicode line separators and lone
# surrogates (they cannot be encoded as UTF-8, so Redis and JSON writers fail on them later).
_NOT_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Multi-line text (commands, env values) keeps tab, newline and carriage return.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def show(value: object, width: int = 60) -> str:
    """`repr` of a value for an error message, cut to `width` characters: messages echo what the user
    wrote, but never a megabyte of it."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _refuse(found: re.Match[str], why: str) -> None:
    char = found.group()
    if char == "\x00":
        name = "a NUL character"
    elif "\ud800" <= char <= "\udfff":
        name = f"a lone surrogate {char!r} (not encodable as UTF-8)"
    else:
        name = f"the control character {char!r}"
    raise ValueError(f"contains {name} at position {found.start()}{why}")


def one_line(value: str) -> str:
    """A value for a one-line field (image, GPU name, region): no control character, no line break."""
    found = _NOT_ONE_LINE.search(value)
    if found is not None:
        _refuse(found, "; this field is one line of text")
    return value


def text(value: str) -> str:
    """Multi-line text (run, setup, an env value): tabs and newlines are fine, NUL and other controls
    are not."""
    found = _NOT_TEXT.search(value)
    if found is not None:
        _refuse(found, "")
    return value


def utf8_size(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def kib(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} bytes"
