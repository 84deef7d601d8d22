"""flow_lcm: x0 = x - sigma v, re-noised with fresh seeded noise to the next sigma except at the last step."""

import pytest
import torch
from analytic import gaussian_velocity, point_mass_velocity

from wan_t2i.samplers import FlowLCMSolver, sample, sample_many

LIGHTX2V_STEPS = [1000, 750, 500, 250]  # LightX2V's Wan step-distill list, here as the model's own timesteps


def test_oracle_for_a_known_x0_lands_on_it_exactly():
    """With v = (x - x0) / sigma every prediction is x0, whatever the noise added in between: the result is x0."""
    x0 = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(3, 4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    result = sample(point_mass_velocity(x0), noise, sampler="flow_lcm", steps=4, shift=5.0, timesteps=LIGHTX2V_STEPS,
                    generator=generator)  # fmt: skip
    torch.testing.assert_close(result, x0.expand_as(result), atol=1e-6, rtol=0)  # float32 rounding only


def test_each_step_is_the_update_by_hand_with_the_generators_draws():
    noise = torch.randn(2, 4, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    v = torch.full_like(noise, 0.25)
    steps = []
    sample(lambda x, t: v, noise, sampler="flow_lcm", steps=4, shift=5.0, generator=torch.Generator().manual_seed(7),
           callback=lambda i, t, x, x0: steps.append((int(t), x.clone(), x0.clone())))  # fmt: skip
    draws = torch.Generator().manual_seed(7)
    sigmas = [1.0, 0.9375, 5 / 6, 0.625, 0.0]  # Wan's dpm++ grid, 4 steps at shift 5: LightX2V's at shift 5
    assert [t for t, _, _ in steps] == [1000, 937, 833, 625]
    x = noise
    for i, (_, x_after, x0_pred) in enumerate(steps):
        torch.testing.assert_close(x0_pred, x - sigmas[i] * v)
        eps = torch.randn(noise.shape, generator=draws) if i < 3 else 0  # no noise after the last step
        x = (1 - sigmas[i + 1]) * x0_pred + sigmas[i + 1] * eps
        torch.testing.assert_close(x_after, x)


def test_deterministic_for_a_seed_and_the_generator_is_left_as_it_was():
    noise = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(11)
    state = generator.get_state()
    runs = [sample(gaussian_velocity(0.8), noise, sampler="flow_lcm", steps=4, shift=5.0, generator=g)
            for g in (generator, generator, torch.Generator().manual_seed(12))]  # fmt: skip
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])
    assert torch.equal(generator.get_state(), state)


def test_alone_or_beside_others_the_same_noise_stream():
    """Each flow_lcm sampler draws from its own copy of the generator: order and company change nothing."""
    noise = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    velocity = gaussian_velocity(0.8)

    def two_models(x, t, row_models):  # model "b" is model "a" scaled by 0.9
        return velocity(x, t) * torch.tensor([1.0 if m == "a" else 0.9 for m in row_models]).view(-1, 1, 1, 1, 1)

    alone = sample(velocity, noise, sampler="flow_lcm", steps=4, shift=5.0, generator=torch.Generator().manual_seed(9))
    together = sample_many(
        two_models,
        [noise] * 3,
        samplers=["flow_unipc", "flow_lcm", "flow_lcm"],
        models=["a", "b", "a"],
        steps=4,
        shift=5.0,
        generator=torch.Generator().manual_seed(9),
    )  # fmt: skip
    assert torch.equal(together[2], alone)
    assert not torch.allclose(together[1], alone)  # the other model, same noise stream


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_on_a_multistep_models_exact_velocity_it_lands_narrower_than_the_data_by_the_known_amount(scale):
    """LCM is exact for a consistency student, not for a model of the probability-flow ODE: fed the exact velocity of
    Gaussian data N(0, s^2), each prediction is the posterior mean c x, c = (1 - sigma) s^2 / var(sigma), so the
    final variance follows var' = (1 - sigma')^2 c^2 var + sigma'^2 down the grid and ends below s^2."""
    noise = torch.randn(8, 16, 1, 32, 32, generator=torch.Generator().manual_seed(6))
    result = sample(gaussian_velocity(scale), noise, sampler="flow_lcm", steps=4, shift=1.0, timesteps=LIGHTX2V_STEPS,
                    generator=torch.Generator().manual_seed(8))  # fmt: skip
    variance, sigmas = 1.0, [t / 1000 for t in LIGHTX2V_STEPS] + [0.0]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        c = (1 - sigma) * scale**2 / ((1 - sigma) ** 2 * scale**2 + sigma**2)
        variance = (1 - sigma_next) ** 2 * c**2 * variance + sigma_next**2
    assert result.std().item() == pytest.approx(variance**0.5, rel=0.01)  # 131k values: about 0.2% sampling error
    assert result.std().item() < 0.8 * scale  # washed out: 0.56 s for s = 1


def test_the_grid_is_wans_dpmpp_one_or_the_explicit_timesteps():
    default = FlowLCMSolver(4, 5.0)
    assert default.timesteps.tolist() == [1000, 937, 833, 625]
    explicit = FlowLCMSolver(20, 5.0, LIGHTX2V_STEPS)
    assert explicit.timesteps.tolist() == LIGHTX2V_STEPS
    assert explicit.sigmas.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
