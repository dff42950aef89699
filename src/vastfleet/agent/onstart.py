"""The onstart command: writes the agent to the instance's disk and runs it, on every container start.

`build_onstart(api_url)` returns one POSIX sh script, the same for every job: it picks the workdir
(`$VASTFLEET_WORKDIR`, else `$VASTFLEET_SIM_WORKSPACE`, else /workspace), finds python3, writes
`$WORKDIR/.vastfleet/agent.py` and `exec`s it. The agent travels as a quoted heredoc when that fits, else
gzip + base64 decoded by the image's own python; either way without its comments and docstrings
(`travelling_source`: they are for readers of this repository, and every line stays where it was, so an
error's "agent.py line N" still points at the source). vast.ai caps onstart at 16 KB; `build_onstart` refuses
to return anything longer. Nothing secret is in it: the agent token and the per-attempt values travel
in the instance env given at create time (`agent_env`). Standard library only, like the whole package.
"""

from __future__ import annotations

import base64
import gzip
import io
import re
import tokenize
from pathlib import Path

ONSTART_LIMIT = 16 * 1024
AGENT_SOURCE = Path(__file__).with_name("agent.py")
_HEREDOC_END = "VASTFLEET_AGENT_EOF"

_HEAD = """W="${{VASTFLEET_WORKDIR:-${{VASTFLEET_SIM_WORKSPACE:-/workspace}}}}"
mkdir -p "$W/.vastfleet" || exit 1
export VASTFLEET_API="${{VASTFLEET_API:-{api}}}" PYTHONUNBUFFERED=1
P="$(command -v python3 || command -v python)" || {{ echo "vastfleet: no python3 in this image; the agent cannot run" >&2; exit 1; }}
"""
_PLAIN = """cat > "$W/.vastfleet/agent.py" <<'{end}'
{source}
{end}
"""
_PACKED = """"$P" -c 'import base64,gzip,sys;open(sys.argv[1],"wb").write(gzip.decompress(base64.b64decode(sys.argv[2])))' \
"$W/.vastfleet/agent.py" '{blob}' || exit 1
"""
_TAIL = 'exec "$P" "$W/.vastfleet/agent.py"\n'


def agent_source() -> str:
    return AGENT_SOURCE.read_text()


def travelling_source(source: str) -> str:
    """`source` with its comments removed and its docstrings emptied, each line kept at its number."""
    toks = list(tokenize.generate_tokens(io.StringIO(source).readline))
    starts = (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)
    for i, tok in enumerate(toks):
        if tok.type == tokenize.COMMENT:
            toks[i] = tok._replace(string="")
        elif (tok.type == tokenize.STRING and (i == 0 or toks[i - 1].type in starts)
              and i + 1 < len(toks) and toks[i + 1].type in (tokenize.NEWLINE, tokenize.ENDMARKER)):
            lines = tok.string.count("\n")
            toks[i] = tok._replace(string='"""' + "\n" * lines + '"""' if lines else '""')
    return "\n".join(line.rstrip() for line in tokenize.untokenize(toks).split("\n"))


def build_onstart(api_url: str, *, compress: bool | None = None, source: str | None = None) -> str:
    """The onstart command for every instance; `compress=None` packs the agent only when needed."""
    if not re.match(r"^https?://[A-Za-z0-9.\-:\[\]]+(/[A-Za-z0-9._~/\-]*)?$", api_url):
        raise ValueError(f"{api_url!r} is not a plain http(s) URL the instance can reach")
    source = travelling_source(agent_source() if source is None else source)
    head = _HEAD.format(api=api_url.rstrip("/"))
    plain = None
    if compress is not True and _HEREDOC_END not in source:
        plain = head + _PLAIN.format(end=_HEREDOC_END, source=source.rstrip("\n")) + _TAIL
    if plain is not None and (compress is False or len(plain.encode()) <= ONSTART_LIMIT):
        script = plain
    else:
        blob = base64.b64encode(gzip.compress(source.encode(), compresslevel=9, mtime=0)).decode()
        script = head + _PACKED.format(blob=blob) + _TAIL
    size = len(script.encode())
    if size > ONSTART_LIMIT:
        raise ValueError(f"the onstart command is {size} bytes; vast.ai allows {ONSTART_LIMIT}")
    return script


def agent_env(
    api_url: str, token: str, job_id: str, epoch: int, workdir: str | None = None, cpus: float | None = None
) -> dict[str, str]:
    """The per-attempt instance env the control plane passes at create time (holds the token: a secret).
    `cpus`: the offer's effective cores, which the agent gives Ray's head (a container may see every core of
    the host, and Ray would schedule on all of them)."""
    env = {
        "VASTFLEET_API": api_url.rstrip("/"),
        "VASTFLEET_AGENT_TOKEN": token,
        "VASTFLEET_JOB_ID": job_id,
        "VASTFLEET_ATTEMPT": str(int(epoch)),
    }
    if workdir:
        env["VASTFLEET_WORKDIR"] = workdir
    if cpus and cpus >= 1:
        env["VASTFLEET_CPUS"] = str(int(cpus))
    return env
