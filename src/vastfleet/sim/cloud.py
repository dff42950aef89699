"""Cloud copy for the simulator: a "cloud connection" is a local directory, `<workdir>/cloud/<connection>/`.

`copy(src_root, src, dst_root, dst)` copies a file or a tree between an instance's sandbox and a connection's
directory and returns the bytes moved (what the ledger bills as bandwidth). Paths are confined to their
roots: `..` or a path escaping the root is refused. Never touches the market.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vastfleet.sim.entities import SimError

CONNECTIONS = (
    {"id": 1001, "name": "sim-local", "cloud_type": "local"},
    {"id": 1002, "name": "sim-backup", "cloud_type": "local"},
)


def instance_path(sandbox: Path, path: str) -> Path:
    """An instance path (`/workspace/x`, `/x` or `x`) inside its sandbox (the container's /workspace)."""
    rel = path.strip()
    if rel == "/workspace" or rel.startswith("/workspace/"):
        rel = rel[len("/workspace") :]
    return _inside(sandbox, rel)


def cloud_path(root: Path, path: str) -> Path:
    return _inside(root, path.strip())


def _inside(root: Path, rel: str) -> Path:
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise SimError(400, "invalid_args", f"Path {rel!r} may not contain '..'.")
    return root.joinpath(*parts)


def copy(src: Path, dst: Path) -> int:
    """Copy src (file or directory) to dst, rclone style: a directory's contents land inside dst."""
    if not src.exists():
        raise SimError(404, "no_such_path", f"Source path {src.name or '/'} does not exist.")
    moved = 0
    if src.is_file():
        target = dst / src.name if dst.is_dir() else dst
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        return target.stat().st_size
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            moved += target.stat().st_size
    dst.mkdir(parents=True, exist_ok=True)
    return moved
