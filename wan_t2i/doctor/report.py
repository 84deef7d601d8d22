"""The doctor's report: one check per question, each a status and plain-words lines with the numbers behind them,
plus every measurement, as a dict (the JSON report) or Markdown (the CLI's printout, the app's Diagnose tab)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from wan_t2i.doctor.experts import ExpertReport
from wan_t2i.doctor.files import FilesReport
from wan_t2i.doctor.probe import ParameterizationReport
from wan_t2i.doctor.sampling import SamplerOutcome
from wan_t2i.doctor.teacher import TeacherComparison
from wan_t2i.doctor.vae import VAERoundTrip

STATUSES = ("ok", "warning", "problem", "skipped")  # worst last but one: a skipped check is no finding
MARKS = {"ok": "OK", "warning": "WARNING", "problem": "PROBLEM", "skipped": "skipped"}


@dataclass
class Check:
    """One question the doctor answers."""

    name: str  # "files", "vae", "parameterization", "timestep", "samplers", "experts", "teacher"
    title: str  # as the report heads it
    status: str  # one of STATUSES
    lines: list[str]  # plain words with numbers; the first is the summary

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")


@dataclass
class DoctorReport:
    """Every check, and the measurements behind them (None where a check did not run)."""

    model: str  # what was diagnosed, in words
    checks: list[Check] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # seed, images, size, steps, shift, device...
    files: FilesReport | None = None
    vae: VAERoundTrip | None = None
    parameterization: ParameterizationReport | None = None
    samplers: dict[str, SamplerOutcome] | None = None
    experts: ExpertReport | None = None
    teacher: TeacherComparison | None = None

    def check(self, name: str) -> Check:
        """The check called `name`; KeyError if it was not made."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check {name!r}; made: {', '.join(c.name for c in self.checks)}")

    @property
    def problems(self) -> list[str]:
        """The summary line of every check with a problem."""
        return [f"{c.title}: {c.lines[0]}" for c in self.checks if c.status == "problem"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        """Everything, JSON-ready (non-finite numbers become null)."""
        parts = {
            "files": self.files,
            "vae": self.vae,
            "parameterization": self.parameterization,
            "experts": self.experts,
            "teacher": self.teacher,
        }
        data = {
            "model": self.model,
            "ok": self.ok,
            "settings": self.settings,
            "checks": [vars(c).copy() for c in self.checks],
            **{name: part.to_dict() if part is not None else None for name, part in parts.items()},
            "samplers": {k: v.to_dict() for k, v in self.samplers.items()} if self.samplers is not None else None,
        }
        return _finite(data)

    def to_markdown(self) -> str:
        """The report as Markdown: a heading, then one section per check with its status and lines."""
        lines = [f"# Checkpoint doctor: {self.model}", ""]
        if self.settings:
            lines += ["Measured with " + ", ".join(f"{k} {v}" for k, v in self.settings.items()) + ".", ""]
        for check in self.checks:
            lines += [f"## {check.title}: {MARKS[check.status]}", ""]
            lines += [f"- {line}" for line in check.lines] + [""]
        verdict = "no problems found" if self.ok else f"{len(self.problems)} problem(s) found"
        lines.append(f"**{verdict}**")
        return "\n".join(lines) + "\n"

    def save(self, json_path: str | Path) -> Path:
        """Write the JSON report; returns its path."""
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def _finite(value):
    """A copy with NaN and infinities replaced by None (JSON has neither), tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
