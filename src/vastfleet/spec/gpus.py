"""The GPU models vastfleet knows, under vast.ai's names (spaces, as the marketplace spells them).

Users may write a name with underscores (`RTX_4090`, the vast CLI's style) or in any case; `canonical_gpu`
maps it to the marketplace's spelling or raises with a "did you mean". The figures (VRAM, a typical DLPerf
and on-demand $/h per GPU) seed the simulator and the cost model's defaults; live offers always win.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from vastfleet.errors import BadInput


@dataclass(frozen=True)
class GpuModel:
    name: str  # vast.ai's spelling, e.g. "RTX 4090"
    vram_gb: int
    dlperf: float  # a typical single-GPU DLPerf score on vast
    dph: float  # a typical on-demand $/h for one GPU
    cuda_max: float  # the highest CUDA version common drivers for it offer


GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel("RTX 3060", 12, 9.5, 0.08, 12.4),
    GpuModel("RTX 3070", 8, 13.0, 0.10, 12.4),
    GpuModel("RTX 3080", 10, 17.5, 0.14, 12.4),
    GpuModel("RTX 3090", 24, 22.0, 0.22, 12.4),
    GpuModel("RTX 3090 Ti", 24, 24.5, 0.25, 12.4),
    GpuModel("RTX 4070", 12, 18.0, 0.13, 12.8),
    GpuModel("RTX 4080", 16, 27.0, 0.20, 12.8),
    GpuModel("RTX 4090", 24, 44.0, 0.40, 12.8),
    GpuModel("RTX 5090", 32, 62.0, 0.65, 12.8),
    GpuModel("RTX A4000", 16, 14.0, 0.15, 12.4),
    GpuModel("RTX A5000", 24, 20.0, 0.22, 12.4),
    GpuModel("RTX A6000", 48, 28.0, 0.45, 12.4),
    GpuModel("RTX 6000Ada", 48, 50.0, 0.80, 12.8),
    GpuModel("L4", 24, 16.0, 0.30, 12.4),
    GpuModel("L40", 48, 45.0, 0.75, 12.4),
    GpuModel("L40S", 48, 52.0, 0.85, 12.8),
    GpuModel("A10", 24, 17.0, 0.30, 12.2),
    GpuModel("A40", 48, 27.0, 0.40, 12.2),
    GpuModel("A100 PCIE", 40, 60.0, 0.90, 12.4),
    GpuModel("A100 SXM4", 80, 70.0, 1.10, 12.4),
    GpuModel("A100X", 80, 68.0, 1.05, 12.4),
    GpuModel("H100 PCIE", 80, 110.0, 1.90, 12.8),
    GpuModel("H100 SXM", 80, 135.0, 2.30, 12.8),
    GpuModel("H100 NVL", 94, 125.0, 2.20, 12.8),
    GpuModel("H200", 141, 150.0, 3.00, 12.8),
    GpuModel("B200", 180, 260.0, 5.50, 12.8),
    GpuModel("Tesla T4", 16, 8.0, 0.10, 12.2),
    GpuModel("Tesla V100", 16, 20.0, 0.25, 12.2),
    GpuModel("Q RTX 8000", 48, 18.0, 0.30, 12.2),
)

_BY_KEY: dict[str, GpuModel] = {}
for _m in GPU_MODELS:
    _BY_KEY[_m.name.replace(" ", "").replace("_", "").replace("-", "").lower()] = _m


def _key(name: str) -> str:
    return name.replace(" ", "").replace("_", "").replace("-", "").lower()


def gpu_model(name: str) -> GpuModel:
    """The catalogue entry for `name` in any accepted spelling."""
    found = _BY_KEY.get(_key(name))
    if found is None:
        raise BadInput(unknown_gpu_message(name))
    return found


def canonical_gpu(name: str) -> str:
    """vast.ai's spelling of a GPU name (`RTX_4090` -> `RTX 4090`)."""
    return gpu_model(name).name


def unknown_gpu_message(name: str) -> str:
    spelled = {_key(m.name): m.name for m in GPU_MODELS}
    close = difflib.get_close_matches(_key(name), list(spelled), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(spelled[c].replace(' ', '_')) for c in close)}?" if close else ""
    return f"unknown GPU {name!r}{hint} (known: {', '.join(m.name.replace(' ', '_') for m in GPU_MODELS)})"
