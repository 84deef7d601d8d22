"""What a model predicts: flow velocity, noise or clean latents, with which sign, on which timestep scale.

From clean latents z0 and seeded noise eps, the probe builds x = (1 - sigma) z0 + sigma eps at several sigma, runs
the model with t on Wan's 0-1000 scale and on 0-1, and scores its output against every candidate target y: the flow
velocity eps - z0, the noise eps, the clean latents z0, and their negatives.

What decides is *calibration*, the orthogonality principle of least squares: a model that minimised E|p - y|^2
outputs p = E[y | x], whose error y - p is orthogonal to every function of x, in particular to p itself and to x. So
for the target the model was trained on, per sigma,

    gain = <p, y> / <p, p> = 1        and        x-correlation = <y - p, x> / (|y| |x|) = 0,

whatever its accuracy, while every other target is an affine function of it and x with other coefficients (v = eps -
z0 = (eps - x) / (1 - sigma)), so it misses these by amounts that depend on sigma. The candidate with the smallest
mean |gain - 1| + |x-correlation| names the prediction and its sign. Only then the timestep scale: of that
prediction on t in 0-1000 and on 0-1, the one with the higher *skill*, 1 - |p - y|^2 / min_c |c x - y|^2 (1 exact,
0 no better than the best scaled copy of x_t). Skill alone does not decide the prediction: an under-trained eps
model read as a velocity has the higher skill (a velocity reading shrinks its errors by 1 - sigma), and raw cosine
does not either: for Gaussian latents the optimal velocity predictor at sigma = 0.2 has cosine 0.97 with -z0 and 0.78
with v itself, because every optimal predictor of Gaussian data is a multiple of x.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from wan_t2i.constants import NUM_TRAIN_TIMESTEPS
from wan_t2i.samplers import SAMPLERS

PARAMETERIZATIONS = ("flow_velocity", "epsilon", "x0")
TIMESTEP_SCALES = (NUM_TRAIN_TIMESTEPS, 1)  # Wan's 0-1000, and the 0-1 a student trained on sigma itself expects
DEFAULT_SIGMAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Decision thresholds, on the mean skill over the sigmas (0 = as good as the best scaled copy of x, which is also
# what the optimal predictor of Gaussian latents achieves; the demo model scores 0.6; a random network -0.9).
MAX_MISCALIBRATION = 0.5  # above this no candidate fits (the demo model: 0.27; a random network: about 1)
MIN_CALIBRATION_MARGIN = 0.05  # the best (target, sign) must beat every other by this much (a 200-step ε student: 0.08)
MIN_MARGIN = 0.05  # of mean skill: the better timestep scale must beat the other by this much
SKILL_FLOOR = -4.0  # per-sigma skill is clipped here before averaging: one hopeless sigma may not decide alone
MISCALIBRATION_CAP = 2.0  # likewise for the per-sigma miscalibration

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# What each sampler of `wan_t2i.samplers` reads the model's output as: every flow_* sampler the flow velocity
# eps - x0 with t on 0-1000 along x = (1 - sigma) x0 + sigma eps, legacy_ddim something else.
FLOW_SAMPLERS = tuple(name for name in SAMPLERS if name.startswith("flow_"))
LEGACY_READS = "the noise eps of a variance-preserving path with alpha = 1 - t/1000"  # legacy_ddim: no Wan model's
# How a flow sampler misreads each other output, and how to turn that output into the velocity it expects.
MISREADS = {
    "epsilon": ("reads the predicted noise as a velocity", "v = (eps - x) / (1 - sigma), or retrain on eps - x0"),
    "x0": ("reads the predicted clean latents as a velocity", "v = (x - x0) / sigma, or retrain on eps - x0"),
}


@dataclass
class CandidateFit:
    """How well the model's output matches one candidate target, per sigma of the probe."""

    parameterization: str  # one of PARAMETERIZATIONS
    sign: int  # +1, or -1 for the negated target
    timestep_scale: int  # the model was given t = sigma * timestep_scale
    cosine: list[float]  # cos(p, y) per sigma
    relative_error: list[float]  # |p - y| / |y| per sigma
    skill: list[float]  # 1 - |p - y|^2 / min_c |c x - y|^2 per sigma (see the module docstring)
    gain: list[float]  # <p, y> / <p, p> per sigma: 1 for the best predictor of y
    x_correlation: list[float]  # <y - p, x> / (|y| |x|) per sigma: 0 for the best predictor of y

    @property
    def name(self) -> str:
        sign = "" if self.sign > 0 else "-"
        return f"{sign}{self.parameterization} (t on 0-{self.timestep_scale})"

    @property
    def mean_skill(self) -> float:
        return sum(max(s, SKILL_FLOOR) for s in self.skill) / len(self.skill)

    @property
    def miscalibration(self) -> float:
        """Mean over sigma of |gain - 1| + |x-correlation| (each sigma's term capped): 0 for the best predictor of
        this target, whatever its accuracy."""
        terms = [
            min(abs(g - 1) + abs(r), MISCALIBRATION_CAP) for g, r in zip(self.gain, self.x_correlation, strict=True)
        ]
        return sum(terms) / len(terms)


@dataclass
class ParameterizationReport:
    """The probe's verdict and every number behind it."""

    parameterization: str  # "flow_velocity", "epsilon", "x0" or "unknown"
    sign: int | None  # +1, -1 (trained on the negated target); None when unknown
    timestep_scale: int | None  # 1000 (Wan's) or 1; None when unknown, or when the output hardly depends on t
    sigmas: list[float]
    fits: list[CandidateFit]  # every candidate, best first
    reason: str  # in plain words, with the numbers that decided
    seed: int = 0
    shape: list[int] = field(default_factory=list)  # of the clean latents probed

    @property
    def best(self) -> CandidateFit:
        """The candidate with the highest mean skill, whether or not it fits."""
        return self.fits[0]

    def fit(self, parameterization: str, sign: int = 1, timestep_scale: int = NUM_TRAIN_TIMESTEPS) -> CandidateFit:
        """The numbers of one candidate."""
        for candidate in self.fits:
            if (candidate.parameterization, candidate.sign, candidate.timestep_scale) == (
                parameterization,
                sign,
                timestep_scale,
            ):
                return candidate
        raise KeyError(f"no candidate {parameterization!r} with sign {sign} on 0-{timestep_scale}")

    @property
    def matching_samplers(self) -> list[str]:
        """The samplers of `wan_t2i.samplers` that read this model's output as what it is."""
        wan_convention = (self.parameterization, self.sign) == ("flow_velocity", 1) and self.timestep_scale in (
            NUM_TRAIN_TIMESTEPS,
            None,  # the scale could not be told: they match if it follows Wan's
        )
        return list(FLOW_SAMPLERS) if wan_convention else []

    @property
    def verdict(self) -> list[str]:
        """Plain-words lines: what the model predicts, which samplers match, what the others do and how to fix it."""
        if self.parameterization == "unknown":
            return [f"the output fits none of flow velocity, noise or clean latents: {self.reason}; no sampler matches"]
        what = self.parameterization.replace("_", " ") + ("" if self.sign > 0 else " with the sign flipped")
        lines = [f"{what}, t on 0-{self.timestep_scale or NUM_TRAIN_TIMESTEPS} ({self.reason})"]
        if self.timestep_scale is None:
            lines.append("its output hardly depends on t, so the timestep scale cannot be told")
        if self.matching_samplers:
            lines.append(f"samplers that match: {', '.join(self.matching_samplers)}")
            if self.timestep_scale is None:
                lines[-1] += f" (if it follows Wan's 0-{NUM_TRAIN_TIMESTEPS} scale)"
            lines.append(f"legacy_ddim does not: it reads this output as {LEGACY_READS}")
            return lines
        problems, fixes = [], []
        if self.parameterization in MISREADS:
            problems.append(MISREADS[self.parameterization][0])
            fixes.append(MISREADS[self.parameterization][1])
        if self.sign < 0:
            problems.append("steps against the velocity (this model predicts its target negated)")
            fixes.append("negate the output")
        if self.timestep_scale == 1:
            problems.append(f"gives t on 0-{NUM_TRAIN_TIMESTEPS} to a model trained on t = sigma in 0-1")
            fixes.append(f"give the model t / {NUM_TRAIN_TIMESTEPS}")
        lines.append(f"no sampler here matches: {', '.join(FLOW_SAMPLERS)} {'; '.join(problems)}")
        lines.append(f"legacy_ddim reads it as {LEGACY_READS}, which no Wan-path model predicts")
        lines.append(f"to sample it with {FLOW_SAMPLERS[0]}: {'; '.join(fixes)}")
        return lines

    def to_dict(self) -> dict:
        fits = [asdict(f) | {"mean_skill": f.mean_skill, "miscalibration": f.miscalibration} for f in self.fits]
        return asdict(self) | {"fits": fits, "matching_samplers": self.matching_samplers, "verdict": self.verdict}


def candidate_targets(clean: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three candidate targets of x = (1 - sigma) z0 + sigma eps."""
    return {"flow_velocity": noise - clean, "epsilon": noise, "x0": clean}


def _scores(pred: torch.Tensor, x: torch.Tensor, target: torch.Tensor) -> tuple[float, ...]:
    """(cosine, relative error, skill, gain, x-correlation) of `pred` as a predictor of `target`, over every element
    (float64); see the module docstring."""
    p, x, y = pred.double().flatten(), x.double().flatten(), target.double().flatten()
    error = (p - y).square().sum()
    # The error of the best multiple c x of the input, c = <x, y> / <x, x>: what a model that knows nothing but the
    # scale of the data does. The tiny floor keeps an exact oracle at sigma -> 0 (where y = z0 = x) finite.
    baseline = (y.square().sum() - (x @ y) ** 2 / x.square().sum()).clamp_min(1e-12 * y.square().sum())
    cosine = (p @ y) / (p.norm() * y.norm()).clamp_min(1e-30)
    gain = (p @ y) / p.square().sum().clamp_min(1e-30)
    x_correlation = ((y - p) @ x) / (y.norm() * x.norm()).clamp_min(1e-30)
    return float(cosine), float(error.sqrt() / y.norm()), float(1 - error / baseline), float(gain), float(x_correlation)


@torch.no_grad()
def probe_parameterization(
    model_fn: ModelFn,
    clean_latents: torch.Tensor,
    *,
    sigmas: Sequence[float] | None = None,
    seed: int = 0,
) -> ParameterizationReport:
    """Tell what `model_fn` predicts, by fitting its output against flow velocity, noise and clean latents.

    Args:
        model_fn: `(x, t) -> prediction`, as `wan_t2i.samplers.sample` calls it: x (B, C, F, h, w) and t (B,)
            float32 on Wan's 0-1000 scale; the probe also calls it with t on 0-1, to find the convention it follows.
        clean_latents: (B, C, 1, h, w) normalised clean latents (VAE-encoded images); one latent is enough, more
            make the numbers steadier.
        sigmas: noise levels in (0, 1) to probe at; default DEFAULT_SIGMAS.
        seed: of the noise eps (drawn on the CPU, so a seed gives the same numbers on every device).

    Returns:
        A ParameterizationReport: `parameterization` ("flow_velocity", "epsilon", "x0" or "unknown"), `sign`,
        `timestep_scale`, and per candidate and sigma the cosine, relative error and skill.
    """
    sigmas = [float(s) for s in (DEFAULT_SIGMAS if sigmas is None else sigmas)]
    if not sigmas or not all(0 < s < 1 for s in sigmas):
        raise ValueError(f"sigmas must be a non-empty list of numbers in (0, 1), got {sigmas}")
    if clean_latents.dim() != 5:
        raise ValueError(f"clean_latents must be (B, C, 1, h, w), got shape {tuple(clean_latents.shape)}")
    clean = clean_latents.float()
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator).to(clean.device)
    targets = candidate_targets(clean, noise)
    numbers: dict[tuple[str, int, int], list[list[float]]] = {}  # -> [cosine, error, skill, gain, x-corr.]
    for sigma in sigmas:
        x = (1 - sigma) * clean + sigma * noise
        for scale in TIMESTEP_SCALES:
            t = torch.full((len(x),), sigma * scale, dtype=torch.float32, device=x.device)
            pred = model_fn(x, t).float()
            if pred.shape != x.shape:
                raise ValueError(f"the model returned shape {tuple(pred.shape)} for input {tuple(x.shape)}")
            for name, target in targets.items():
                for sign in (1, -1):
                    scores = _scores(pred, x, sign * target)
                    columns = numbers.setdefault((name, sign, scale), [[], [], [], [], []])
                    for column, value in zip(columns, scores, strict=True):
                        column.append(value)
    fits = [
        CandidateFit(name, sign, scale, cosine=c, relative_error=e, skill=s, gain=g, x_correlation=r)
        for (name, sign, scale), (c, e, s, g, r) in numbers.items()
    ]
    # What it predicts: the (target, sign) it is calibrated for, on whichever scale suits it better.
    by_target: dict[tuple[str, int], float] = {}
    for f in fits:
        key = (f.parameterization, f.sign)
        by_target[key] = min(by_target.get(key, float("inf")), f.miscalibration)

    def calibration(f: CandidateFit) -> float:
        return by_target[(f.parameterization, f.sign)]

    fits.sort(key=lambda f: (calibration(f), -f.mean_skill))
    # Its timestep scale: of the two scales of that prediction, the one on which it predicts better.
    pair = sorted(fits[:2], key=lambda f: f.mean_skill, reverse=True)
    best, other_scale = pair
    fits = [best, other_scale] + fits[2:]
    rival = next(f for f in fits if (f.parameterization, f.sign) != (best.parameterization, best.sign))
    measured = (
        f"miscalibration {calibration(best):.2f} (0 = the best predictor of that target), next {rival.name} "
        f"{calibration(rival):.2f}; mean skill on 0-{best.timestep_scale} {best.mean_skill:+.2f}, on "
        f"0-{other_scale.timestep_scale} {other_scale.mean_skill:+.2f} (1 = exact, 0 = no better than a scaled copy "
        f"of x_t), over sigma {sigmas[0]:g}..{sigmas[-1]:g}"
    )
    if calibration(best) > MAX_MISCALIBRATION:
        verdict, reason = "unknown", f"no candidate fits: best {best.name}, {measured}"
    elif calibration(rival) - calibration(best) < MIN_CALIBRATION_MARGIN:
        verdict, reason = "unknown", f"two candidates fit about equally: best {best.name}, {measured}"
    else:
        verdict, reason = best.parameterization, measured
    known = verdict != "unknown"
    scale_known = known and best.mean_skill - other_scale.mean_skill >= MIN_MARGIN
    return ParameterizationReport(
        parameterization=verdict,
        sign=best.sign if known else None,
        timestep_scale=best.timestep_scale if scale_known else None,
        sigmas=sigmas,
        fits=fits,
        reason=reason,
        seed=seed,
        shape=list(clean.shape),
    )
