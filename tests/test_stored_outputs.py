"""Every sampler's outputs on a tiny seeded Wan, against values stored before the redesign (tests/data).

The values were written by tests/data/make_stored_outputs.py (its command, commit and library versions are in the data
file). They are compared within float rounding, which differs between CPUs' kernels: 1e-4 on latents (relative too,
since legacy_ddim's latents reach about 100) and 1/255 on pixels. A change of numerics beyond rounding fails here;
a deliberate one regenerates the file and says why in its commit.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sensitive_wan import one_torch_thread, save_sensitive_wan

from wan_t2i.pipeline import WanT2IPipeline

STORED = json.loads((Path(__file__).parent / "data" / "stored_outputs.json").read_text())
SAMPLERS = STORED["settings"]["samplers"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> WanT2IPipeline:
    folder = save_sensitive_wan(tmp_path_factory.mktemp("sensitive-wan"))
    return WanT2IPipeline.from_pretrained(teacher_path=folder, device="cpu")


@pytest.fixture(scope="module")
def together(pipe):
    """All samplers in one call, as the data were generated."""
    return pipe.generate(STORED["prompt"], **STORED["settings"])


def assert_matches_stored(result, stored: dict) -> None:
    """The result's latent slice, mean and std within 1e-4, and its pixel slice within 1/255, of the stored ones."""
    latents = result.latents.flatten().double()
    expected = torch.tensor(stored["latents"], dtype=torch.float64)
    torch.testing.assert_close(latents[:: STORED["latent_stride"]], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(latents.mean().item(), stored["latents_mean"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(latents.std().item(), stored["latents_std"], atol=1e-4, rtol=1e-4)
    pixels = np.asarray(result.image, dtype=np.int64).flatten()[:: STORED["pixel_stride"]]
    assert np.abs(pixels - np.array(stored["pixels"])).max() <= 1


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_together_reproduce_the_stored_outputs(together, sampler):
    assert_matches_stored(together[sampler], STORED["outputs"][sampler])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_alone_reproduces_the_stored_outputs(pipe, sampler):
    """A sampler run on its own gives what it gave beside the others: batching changes nothing but rounding."""
    result = pipe.generate(STORED["prompt"], **(STORED["settings"] | {"samplers": [sampler]}))[sampler]
    assert_matches_stored(result, STORED["outputs"][sampler])
