"""A fake `nvidia-smi` for simulated instances: a small /bin/sh script that prints the instance's GPUs.

Supports plain `nvidia-smi`, `nvidia-smi -L`, and `nvidia-smi --query-gpu=FIELDS --format=csv[,noheader]
[,nounits]` for the fields name, memory.total, memory.used, memory.free, uuid, index, driver_version,
utilization.gpu, temperature.gpu. Written once per instance into its bin directory. Never touches a GPU.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

_TEMPLATE = r"""#!/bin/sh
# fake nvidia-smi written by the vastfleet simulator for instance __ID__
NAME=__NAME__
COUNT=__COUNT__
MEM_MIB=__MEM__
DRIVER=__DRIVER__
CUDA=__CUDA__
uuid() { printf 'GPU-5157a000-0000-4000-8000-%012d' "$((__ID__ * 16 + $1))"; }
field() {
  case "$1" in
    name|gpu_name) printf '%s' "$NAME" ;;
    memory.total) if [ "$NOUNITS" = 1 ]; then printf '%s' "$MEM_MIB"; else printf '%s MiB' "$MEM_MIB"; fi ;;
    memory.used) if [ "$NOUNITS" = 1 ]; then printf '0'; else printf '0 MiB'; fi ;;
    memory.free) if [ "$NOUNITS" = 1 ]; then printf '%s' "$MEM_MIB"; else printf '%s MiB' "$MEM_MIB"; fi ;;
    uuid|gpu_uuid) uuid "$2" ;;
    index) printf '%s' "$2" ;;
    driver_version) printf '%s' "$DRIVER" ;;
    utilization.gpu) if [ "$NOUNITS" = 1 ]; then printf '0'; else printf '0 %%'; fi ;;
    temperature.gpu) printf '40' ;;
    count) printf '%s' "$COUNT" ;;
    *) printf '[Not Supported]' ;;
  esac
}
QUERY=""
FORMAT=""
for arg in "$@"; do
  case "$arg" in
    --query-gpu=*) QUERY="${arg#--query-gpu=}" ;;
    --format=*) FORMAT="${arg#--format=}" ;;
    -L|--list-gpus) LIST=1 ;;
  esac
done
case ",$FORMAT," in *,nounits,*) NOUNITS=1 ;; *) NOUNITS=0 ;; esac
if [ "$LIST" = 1 ]; then
  i=0
  while [ "$i" -lt "$COUNT" ]; do
    printf 'GPU %s: %s (UUID: %s)\n' "$i" "$NAME" "$(uuid "$i")"
    i=$((i + 1))
  done
  exit 0
fi
if [ -n "$QUERY" ]; then
  case ",$FORMAT," in
    *,noheader,*) ;;
    *) echo "$QUERY" | sed 's/,/, /g' ;;
  esac
  i=0
  while [ "$i" -lt "$COUNT" ]; do
    line=""
    OLDIFS="$IFS"; IFS=","
    for f in $QUERY; do
      IFS="$OLDIFS"
      f=$(echo "$f" | tr -d ' ')
      v=$(field "$f" "$i")
      if [ -z "$line" ]; then line="$v"; else line="$line, $v"; fi
      IFS=","
    done
    IFS="$OLDIFS"
    echo "$line"
    i=$((i + 1))
  done
  exit 0
fi
echo "+-----------------------------------------------------------------------------------------+"
printf '| NVIDIA-SMI %-18s Driver Version: %-16s CUDA Version: %-9s|\n' "$DRIVER" "$DRIVER" "$CUDA"
echo "|-----------------------------------------+------------------------+----------------------+"
i=0
while [ "$i" -lt "$COUNT" ]; do
  printf '| %3s  %-34s | %22s |                  0%% |\n' "$i" "$NAME" "0MiB / ${MEM_MIB}MiB"
  i=$((i + 1))
done
echo "+-----------------------------------------------------------------------------------------+"
"""


def display_name(gpu_name: str) -> str:
    """How nvidia-smi names a card: "NVIDIA GeForce RTX 4090", "NVIDIA A100 SXM4"."""
    if gpu_name.startswith(("RTX 30", "RTX 40", "RTX 50")):
        return "NVIDIA GeForce " + gpu_name
    return "NVIDIA " + gpu_name


def write_fake_nvidia_smi(
    bin_dir: Path, instance_id: int, gpu_name: str, count: int, vram_gb: float, driver: str, cuda: float
) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    text = (
        _TEMPLATE.replace("__ID__", str(int(instance_id)))
        .replace("__NAME__", shlex.quote(display_name(gpu_name)))
        .replace("__COUNT__", str(int(count)))
        .replace("__MEM__", str(int(vram_gb * 1024 - 512 if vram_gb >= 8 else vram_gb * 1024)))
        .replace("__DRIVER__", shlex.quote(driver))
        .replace("__CUDA__", shlex.quote(f"{cuda:.1f}"))
    )
    path = bin_dir / "nvidia-smi"
    path.write_text(text)
    os.chmod(path, 0o755)
    return path
