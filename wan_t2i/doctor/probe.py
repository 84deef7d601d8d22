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
mean |gain - 1| + |x-correlation| names the prediction and its sign. Only then the timestep scale, from two
measurements of that prediction on t in 0-1000 and on 0-1: its *skill*, 1 - |p - y|^2 / min_c |c x - y|^2 (1 exact,
0 no better than the best scaled copy of x_t), and its *tracking*: at each true sigma of TRACKING_SIGMAS the model is
given the t of every one of them, and a model that follows a scale predicts best when given the true sigma on it (a
model trained on 0-1000 and given t = sigma in 0-1 sees sigma below 0.001 whatever the noise: its output does not
change; one trained on 0-1 and given 1000 sigma sees timesteps it never saw). The scale is named only when both
point the same way and one of them by a clear margin. Skill alone does not decide the prediction: an under-trained eps
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
# Tracking: the true sigmas at which the model is also given every other one's t (5 x 5 forwards per scale). A share of
# them the better scale must lead by to decide alone (3 of 5); a row is tracked only if its own t beats every other
# t by TRACKING_TIE, so a model whose output ignores t (an exactly flat row) tracks nothing.
TRACKING_SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)
MIN_TRACKING_MARGIN = 0.6
TRACKING_TIE = 0.01
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
# A model that follows t on 0-1 under Wan's samplers: what goes wrong, and what to do.
UNIT_SCALE_PROBLEM = (
    f"pass t = {NUM_TRAIN_TIMESTEPS} sigma on Wan's 0-{NUM_TRAIN_TIMESTEPS} scale, as Wan and diffusers do, to a model "
    f"that follows t = sigma on 0-1: it reads every step as a timestep it never saw"
)
UNIT_SCALE_FIX = (
    f"give the model t / {NUM_TRAIN_TIMESTEPS} (model_fn = lambda x, t: model(x, t / {NUM_TRAIN_TIMESTEPS})), "
    f"or fine-tune it with t = {NUM_TRAIN_TIMESTEPS} sigma"
)


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
class TimestepResponse:
    """The named prediction's skill when the model is given the t of every sigma of `sigmas` at each true sigma, on
    one timestep scale: how the output follows t there."""

    timestep_scale: int
    sigmas: list[float]
    skill: list[list[float]]  # [true sigma][sigma whose t the model was given]

    @property
    def tracked(self) -> list[bool]:
        """Per true sigma: the model predicts best when given that sigma's own t (by more than TRACKING_TIE)."""
        rows = enumerate(self.skill)
        return [all(row[i] > value + TRACKING_TIE for j, value in enumerate(row) if j != i) for i, row in rows]

    @property
    def tracking(self) -> float:
        """The share of true sigmas that are tracked: 1 for a model that follows t on this scale, 0 for one whose
        output does not change with t here."""
        return sum(self.tracked) / len(self.tracked)

    @property
    def spread(self) -> float:
        """Mean over the true sigmas of max - min skill across the t given: how much t moves the output's fit."""
        return sum(max(row) - min(row) for row in self.skill) / len(self.skill)


@dataclass
class ParameterizationReport:
    """The probe's verdict and every number behind it."""

    parameterization: str  # "flow_velocity", "epsilon", "x0" or "unknown"
    sign: int | None  # +1, -1 (trained on the negated target); None when unknown
    timestep_scale: int | None  # 1000 (Wan's) or 1; None when unknown, or when the output hardly depends on t
    sigmas: list[float]
    fits: list[CandidateFit]  # every candidate, best first
    reason: str  # in plain words, with the numbers that decided
    timestep_reason: str = ""  # why the scale was named, or not, with the numbers
    timestep_response: list[TimestepResponse] = field(default_factory=list)  # one per scale of TIMESTEP_SCALES
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

    def response(self, timestep_scale: int) -> TimestepResponse:
        """The tracking numbers on one scale."""
        return next(r for r in self.timestep_response if r.timestep_scale == timestep_scale)

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
        scale = f"t on 0-{self.timestep_scale}" if self.timestep_scale else "timestep scale not told"
        lines = [f"{what}, {scale} ({self.reason})"]
        if self.timestep_scale is None:
            lines.append(f"the timestep scale cannot be told: {self.timestep_reason}")
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
            problems.append(UNIT_SCALE_PROBLEM)
            fixes.append(UNIT_SCALE_FIX)
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


def _run(model_fn: ModelFn, x: torch.Tensor, sigma: float, scale: int) -> torch.Tensor:
    """The model's output (float32, the shape of x) at x with t = sigma * scale for every row."""
    t = torch.full((len(x),), sigma * scale, dtype=torch.float32, device=x.device)
    pred = model_fn(x, t).float()
    if pred.shape != x.shape:
        raise ValueError(f"the model returned shape {tuple(pred.shape)} for input {tuple(x.shape)}")
    return pred


def _fit_candidates(
    model_fn: ModelFn, clean: torch.Tensor, noise: torch.Tensor, sigmas: list[float]
) -> list[CandidateFit]:
    """Every (target, sign, timestep scale) scored at every sigma, t = sigma * scale."""
    targets = candidate_targets(clean, noise)
    numbers: dict[tuple[str, int, int], list[list[float]]] = {}  # -> [cosine, error, skill, gain, x-corr.]
    for sigma in sigmas:
        x = (1 - sigma) * clean + sigma * noise
        for scale in TIMESTEP_SCALES:
            pred = _run(model_fn, x, sigma, scale)
            for name, target in targets.items():
                for sign in (1, -1):
                    columns = numbers.setdefault((name, sign, scale), [[], [], [], [], []])
                    for column, value in zip(columns, _scores(pred, x, sign * target), strict=True):
                        column.append(value)
    return [
        CandidateFit(name, sign, scale, cosine=c, relative_error=e, skill=s, gain=g, x_correlation=r)
        for (name, sign, scale), (c, e, s, g, r) in numbers.items()
    ]


def _name_prediction(fits: list[CandidateFit], sigmas: list[float]) -> tuple[str, str, list[CandidateFit]]:
    """(parameterization or "unknown", the reason, the fits ordered best first): the (target, sign) the model is
    calibrated for, its better-skilled scale first, then that target on the other scale, then the rest."""
    by_target: dict[tuple[str, int], float] = {}
    for f in fits:
        key = (f.parameterization, f.sign)
        by_target[key] = min(by_target.get(key, float("inf")), f.miscalibration)

    def calibration(f: CandidateFit) -> float:
        return by_target[(f.parameterization, f.sign)]

    fits = sorted(fits, key=lambda f: (calibration(f), -f.mean_skill))
    best, other_scale = sorted(fits[:2], key=lambda f: f.mean_skill, reverse=True)
    fits = [best, other_scale] + fits[2:]
    rival = next(f for f in fits if (f.parameterization, f.sign) != (best.parameterization, best.sign))
    measured = (
        f"miscalibration {calibration(best):.2f} (0 = the best predictor of that target), next {rival.name} "
        f"{calibration(rival):.2f}; mean skill on 0-{best.timestep_scale} {best.mean_skill:+.2f}, on "
        f"0-{other_scale.timestep_scale} {other_scale.mean_skill:+.2f} (1 = exact, 0 = no better than a scaled copy "
        f"of x_t), over sigma {sigmas[0]:g}..{sigmas[-1]:g}"
    )
    if calibration(best) > MAX_MISCALIBRATION:
        return "unknown", f"no candidate fits: best {best.name}, {measured}", fits
    if calibration(rival) - calibration(best) < MIN_CALIBRATION_MARGIN:
        return "unknown", f"two candidates fit about equally: best {best.name}, {measured}", fits
    return best.parameterization, measured, fits


def timestep_response(
    model_fn: ModelFn,
    clean: torch.Tensor,
    noise: torch.Tensor,
    target: torch.Tensor,
    scale: int,
    sigmas: list[float],
    known: dict[float, float] | None = None,
) -> TimestepResponse:
    """The skill for `target` (B, C, 1, h, w) at each true sigma of `sigmas` when the model is given the t of each;
    `known`: skills already measured at a sigma given its own t (the same target and scale), reused."""
    known = known or {}
    skill = []
    for sigma in sigmas:
        x = (1 - sigma) * clean + sigma * noise
        row = [
            known[sigma]
            if given == sigma and sigma in known
            else _scores(_run(model_fn, x, given, scale), x, target)[2]
            for given in sigmas
        ]
        skill.append(row)
    return TimestepResponse(timestep_scale=scale, sigmas=list(sigmas), skill=skill)


def decide_timestep_scale(
    wan: CandidateFit, unit: CandidateFit, responses: Sequence[TimestepResponse]
) -> tuple[int | None, str]:
    """The scale the prediction follows, from its skill on each scale (`wan`, `unit`: the same target with t on
    0-1000 and on 0-1) and its tracking on each (`responses`; none: skill alone); None with the reason when the two
    do not both point one way with one of them clearly (see the module docstring)."""
    skill = {NUM_TRAIN_TIMESTEPS: wan.mean_skill, 1: unit.mean_skill}
    tracking = {scale: 0.0 for scale in skill} | {r.timestep_scale: r.tracking for r in responses}
    numbers = f"mean skill with t on 0-1000 {skill[NUM_TRAIN_TIMESTEPS]:+.2f}, on 0-1 {skill[1]:+.2f}"
    if responses:
        rows = len(responses[0].sigmas)
        counts = {r.timestep_scale: sum(r.tracked) for r in responses}
        numbers += (
            f"; given the t of each of {rows} sigmas, it fits best at the true one for {counts[NUM_TRAIN_TIMESTEPS]} "
            f"of them on 0-1000, {counts[1]} on 0-1"
        )
    lead, other = sorted(skill, key=skill.get, reverse=True)
    skill_margin, tracking_margin = skill[lead] - skill[other], tracking[lead] - tracking[other]
    if (skill_margin >= MIN_MARGIN and tracking_margin >= 0) or tracking_margin >= MIN_TRACKING_MARGIN:
        return lead, numbers
    if tracking_margin < 0 and (skill_margin >= MIN_MARGIN or -tracking_margin >= MIN_TRACKING_MARGIN):
        return None, f"the skill favours 0-{lead} but the tracking 0-{other} ({numbers})"
    return None, f"neither the skill nor the tracking separates the two scales ({numbers})"


@torch.no_grad()
def probe_parameterization(
    model_fn: ModelFn,
    clean_latents: torch.Tensor,
    *,
    sigmas: Sequence[float] | None = None,
    seed: int = 0,
    tracking_sigmas: Sequence[float] | None = None,
) -> ParameterizationReport:
    """Tell what `model_fn` predicts, by fitting its output against flow velocity, noise and clean latents.

    Args:
        model_fn: `(x, t) -> prediction`, as `wan_t2i.samplers.sample` calls it: x (B, C, F, h, w) and t (B,)
            float32 on Wan's 0-1000 scale; the probe also calls it with t on 0-1, to find the convention it follows.
        clean_latents: (B, C, 1, h, w) normalised clean latents (VAE-encoded images); one latent is enough, more
            make the numbers steadier.
        sigmas: noise levels in (0, 1) to probe at; default DEFAULT_SIGMAS.
        seed: of the noise eps (drawn on the CPU, so a seed gives the same numbers on every device).
        tracking_sigmas: the sigmas of the tracking measurement (len^2 forwards per scale); default TRACKING_SIGMAS,
            () for skill alone.

    Returns:
        A ParameterizationReport: `parameterization` ("flow_velocity", "epsilon", "x0" or "unknown"), `sign`,
        `timestep_scale`, and per candidate and sigma the cosine, relative error and skill.
    """
    sigmas = [float(s) for s in (DEFAULT_SIGMAS if sigmas is None else sigmas)]
    tracking_sigmas = [float(s) for s in (TRACKING_SIGMAS if tracking_sigmas is None else tracking_sigmas)]
    if not sigmas or not all(0 < s < 1 for s in sigmas + tracking_sigmas):
        raise ValueError(f"sigmas must be a non-empty list of numbers in (0, 1), got {sigmas}, {tracking_sigmas}")
    if clean_latents.dim() != 5:
        raise ValueError(f"clean_latents must be (B, C, 1, h, w), got shape {tuple(clean_latents.shape)}")
    clean = clean_latents.float()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)).to(clean.device)
    verdict, reason, fits = _name_prediction(_fit_candidates(model_fn, clean, noise, sigmas), sigmas)
    best = fits[0]
    report = ParameterizationReport(verdict, None, None, sigmas, fits, reason, seed=seed, shape=list(clean.shape))
    if verdict == "unknown":
        report.timestep_reason = "no prediction fits, so no scale"
        return report
    target = best.sign * candidate_targets(clean, noise)[best.parameterization]
    wan, unit = (report.fit(best.parameterization, best.sign, scale) for scale in TIMESTEP_SCALES)
    for fit in (wan, unit) if len(tracking_sigmas) > 1 else ():
        known = dict(zip(sigmas, fit.skill, strict=True))  # the true sigma's own t: measured already
        response = timestep_response(model_fn, clean, noise, target, fit.timestep_scale, tracking_sigmas, known)
        report.timestep_response.append(response)
    report.sign = best.sign
    report.timestep_scale, report.timestep_reason = decide_timestep_scale(wan, unit, report.timestep_response)
    return report
