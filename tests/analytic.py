"""Model functions with known answers, `model_fn(x, t) -> v` on Wan's integer 0-1000 timesteps, for sampler tests.

Each reads sigma = t / 1000 from the timestep the model is given, as a trained model would, so a sampler that passes
the wrong timesteps gets a different answer. They compute in float64 and return float32, as a model's output is.
"""

from __future__ import annotations

import math

import torch


def _sigma(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sigma = t / 1000 (B,), shaped to broadcast against x (B, C, F, H, W), float64."""
    return (t.double() / 1000).view(-1, *[1] * (x.dim() - 1))


def gaussian_velocity(scale: float):
    """Exact flow-matching velocity for data x0 ~ N(0, scale^2): v*(x, sigma) = E[eps - x0 | x_sigma = x]."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = _sigma(t, x)
        variance = (1 - sigma) ** 2 * scale**2 + sigma**2
        return ((sigma - (1 - sigma) * scale**2) / variance * x.double()).float()

    return model_fn


def exact_endpoint(noise: torch.Tensor, sigma_start: float, scale: float) -> torch.Tensor:
    """The probability-flow ODE keeps x / std(sigma) constant, so x(0) = noise * scale / std(sigma_start)."""
    std_start = math.sqrt((1 - sigma_start) ** 2 * scale**2 + sigma_start**2)
    return noise * scale / std_start


def point_mass_velocity(x0: torch.Tensor):
    """Exact velocity when all data is the one point x0 (1, C, F, H, W): v = (x - x0) / sigma, so x - sigma v = x0."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return ((x.double() - x0.double()) / _sigma(t, x)).float()

    return model_fn


def wavy_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed smooth field, nonlinear in x and t, with no meaning beyond being easy to state and to recompute."""
    sigma, x = _sigma(t, x), x.double()
    return ((x - 0.5 * torch.tanh(2 * x)) * (0.5 + sigma) + 0.2 * torch.sin(3 * x)).float()


FIELDS = {"gaussian_0.5": gaussian_velocity(0.5), "wavy": wavy_velocity}  # the fields the Wan references use
