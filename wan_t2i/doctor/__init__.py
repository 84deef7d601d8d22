"""The checkpoint doctor: why a student gives garbage, measured before it is sampled.

`diagnose` runs every check on a model loaded as the CLI loads it; `probe_parameterization` is the one a library user
calls with a plain `model_fn(x, t)`. `python -m wan_t2i.doctor` is the command line (docs/doctor.md).

The names are imported on first use (PEP 562), so that `python -m wan_t2i.doctor --help` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS = {
    "diagnose": "wan_t2i.doctor.diagnose",
    "probe_parameterization": "wan_t2i.doctor.probe",
    "ParameterizationReport": "wan_t2i.doctor.probe",
    "Check": "wan_t2i.doctor.report",
    "DoctorReport": "wan_t2i.doctor.report",
    "render_figure": "wan_t2i.doctor.figure",
}
__all__ = list(EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module 'wan_t2i.doctor' has no attribute {name!r}")
    return getattr(importlib.import_module(EXPORTS[name]), name)
