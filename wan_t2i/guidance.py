"""Classifier-free guidance and Wan 2.2's expert routing, batched into as few transformer forwards as possible.

`guided_model_fn` builds the `model_fn(x, t, row_models)` that `samplers.sample_many` calls. What it computes is,
for each row r separately (tests/test_guidance.py holds this plain loop and checks the batched version against it):

    expert, g = route(row_models[r], t[r])      # Wan 2.2: the high-noise expert while t >= boundary
    cond = expert(x[r], t[r], prompt)
    pred[r] = cond if g == 1 else uncond + g * (cond - uncond),  uncond = expert(x[r], t[r], negative prompt)

Batched, every conditional row and the unconditional twin of every guided row go through one forward per distinct
expert module, so an A/B pair with guidance costs one forward of four rows per step, not four forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import torch

from wan_t2i.constants import BOUNDARY_RATIO, NUM_TRAIN_TIMESTEPS
from wan_t2i.samplers import BatchModelFn


@dataclass(frozen=True)
class Experts:
    """The transformer(s) of one model: a single one, or Wan 2.2's high- and low-noise experts."""

    high: torch.nn.Module  # the model, or the high-noise expert
    low: torch.nn.Module | None = None  # the low-noise expert, used while t < boundary * 1000
    boundary: float | None = None  # as a fraction of NUM_TRAIN_TIMESTEPS; None: Wan's 0.875

    def route(self, t: int | None, guidance: tuple[float, float]) -> tuple[torch.nn.Module, float]:
        """The module for timestep `t` and its guidance scale (`guidance` = (high-noise, low-noise) scales)."""
        if self.low is not None and t < (self.boundary or BOUNDARY_RATIO) * NUM_TRAIN_TIMESTEPS:
            return self.low, guidance[1]
        return self.high, guidance[0]


@dataclass(frozen=True)
class Row:
    """A row key with its own guidance scales, for batches whose rows differ in guidance (a sweep's cells).

    `model_fn`'s row_models entries are a model name (the batch's guidance) or a Row.
    """

    model: Hashable  # a key of the experts mapping: "student" or "teacher"
    guidance: tuple[float, float]  # (high-noise or only expert's scale, low-noise expert's scale)


def run_transformer(module: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """One diffusers WanTransformer3DModel forward: x (B, C, F, H, W), t (B,), context (B, L, D) -> float32."""
    return module(
        hidden_states=x.to(module.dtype),
        timestep=t,
        encoder_hidden_states=context.to(module.dtype),
        return_dict=False,
    )[0].float()


def guided_model_fn(
    experts: Mapping[Hashable, Experts],
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: tuple[float, float],
) -> BatchModelFn:
    """`model_fn(x, t, row_models)` for `sample_many`: guidance and experts batched (see the module docstring).

    Args:
        experts: the transformers of each model a row may name ("student", "teacher").
        cond, uncond: text embeddings (1, L, D) of the prompt and the negative prompt; `uncond` None when no expert
            is guided.
        guidance: (high-noise or only expert's scale, low-noise expert's scale); 1 disables guidance there. A row
            whose key is a `Row` takes the Row's instead.
    """
    # Index tensors and guidance scales repeat from step to step: each is made on the device once, because
    # making one (or indexing with a Python list) copies from the host and waits for the GPU to catch up.
    constants: dict[tuple, torch.Tensor] = {}

    def constant(key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key not in constants:
            constants[key] = make()
        return constants[key]

    def indices(values: list[int], device: torch.device) -> torch.Tensor:
        return constant(("index", *values), lambda: torch.tensor(values, device=device))

    two_experts = any(e.low is not None for e in experts.values())

    def model_fn(x: torch.Tensor, t: torch.Tensor, row_models: list[Hashable]) -> torch.Tensor:
        # Expert routing needs the timesteps on the host: one read per step, for two-expert models only.
        t_host = t.tolist() if two_experts else [None] * len(x)
        routes = [
            experts[key.model].route(t_r, key.guidance) if isinstance(key, Row) else experts[key].route(t_r, guidance)
            for key, t_r in zip(row_models, t_host, strict=True)
        ]
        g_values = tuple(g for _, g in routes)
        guided = [r for r, g in enumerate(g_values) if g != 1 and uncond is not None]
        rows = list(range(len(x))) + guided  # conditional rows, then the unconditional twins of guided rows
        parts = [cond.expand(len(x), -1, -1)] + ([uncond.expand(len(guided), -1, -1)] if guided else [])
        context = constant(("context", len(x), *guided), lambda: torch.cat(parts))
        x_rows = x.index_select(0, indices(rows, x.device)) if guided else x
        t_rows = t.index_select(0, indices(rows, x.device)) if guided else t
        modules = [routes[r][0] for r in rows]
        groups = {module: [i for i, m in enumerate(modules) if m is module] for module in dict.fromkeys(modules)}
        if len(groups) == 1:  # one module for every row: the usual case
            out = run_transformer(modules[0], x_rows, t_rows, context)
        else:  # two experts, or student and teacher: one forward each
            out = torch.empty((len(rows), *x.shape[1:]), device=x.device, dtype=torch.float32)
            for module, group in groups.items():
                index = indices(group, x.device)
                x_g, t_g, context_g = (rows_tensor.index_select(0, index) for rows_tensor in (x_rows, t_rows, context))
                out.index_copy_(0, index, run_transformer(module, x_g, t_g, context_g))
        pred = out[: len(x)]
        if guided:
            g_rows = indices(guided, x.device)
            scales = constant(("scales", *g_values), lambda: torch.tensor(g_values, device=x.device))
            scales = scales.index_select(0, g_rows).view(-1, *[1] * (x.dim() - 1))
            uncond_pred = out[len(x) :]
            pred = pred.index_copy(0, g_rows, uncond_pred + scales * (pred.index_select(0, g_rows) - uncond_pred))
        return pred

    return model_fn
