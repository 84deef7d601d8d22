"""The text encoder replayed from CUDA graphs (`text_graphs`, in `fastest`): the same embedding, one graph per shape.

The recording tests need CUDA and run on the GPU machine (`python -m pytest tests/test_text_graphs.py`); on the CPU
only what must hold there runs: the module is untouched off CUDA and the undo restores its own forward.
"""

import pytest
import torch

from wan_t2i.loading import load_components
from wan_t2i.performance import PerformanceSettings, apply
from wan_t2i.pipeline import WanT2IPipeline
from wan_t2i.single_frame import is_flat
from wan_t2i.text_graphs import GraphedForward, graph_text_encoder, is_graphed, ungraph_text_encoder

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="records CUDA graphs")
PROMPTS = ("a lake at sunset", "a red fox in the snow under a pale winter sky, oil painting, highly detailed " * 6)


def test_text_graphs_cannot_stream():
    with pytest.raises(ValueError, match="text_graphs and low_memory cannot be combined"):
        PerformanceSettings(text_graphs=True, low_memory=True)


@torch.inference_mode()
def test_off_cuda_the_encoder_runs_its_own_forward(tiny_wan_dir):
    components = load_components(teacher_path=tiny_wan_dir, device="cpu")
    encoder = components.text_encoder
    ids, mask = torch.randint(0, encoder.config.vocab_size, (1, 64)), torch.ones(1, 64, dtype=torch.long)
    eager = encoder(ids, mask).last_hidden_state
    apply(components, PerformanceSettings(text_graphs=True))  # a CPU model: nothing to record
    assert not is_graphed(encoder)
    graph_text_encoder(encoder)
    graph_text_encoder(encoder)  # idempotent: one wrapper, not a wrapper of a wrapper
    assert isinstance(encoder.forward, GraphedForward) and not isinstance(encoder.forward.forward, GraphedForward)
    assert torch.equal(encoder(ids, mask).last_hidden_state, eager)  # CPU tensors: the eager forward
    assert encoder.forward.graphs == {}
    ungraph_text_encoder(encoder)
    assert not is_graphed(encoder) and encoder.forward.__func__ is type(encoder).forward


@needs_cuda
@torch.inference_mode()
def test_graphs_give_the_eager_embedding_bit_for_bit(tiny_wan_dir):
    pipe = WanT2IPipeline(load_components(teacher_path=tiny_wan_dir, device="cuda"))
    eager = [pipe.encode_prompt(p) for p in PROMPTS]
    apply(pipe.components, PerformanceSettings(text_graphs=True))
    forward = pipe.components.text_encoder.forward
    assert isinstance(forward, GraphedForward)
    for call in range(3):  # eager at the first call of each length, recorded at the second, replayed at the third
        pipe._text_cache.clear()
        for prompt, expected in zip(PROMPTS, eager, strict=True):
            assert torch.equal(pipe.encode_prompt(prompt), expected)
        if call == 0:
            assert forward.graphs == {}  # nothing recorded at a length's first prompt
    lengths = sorted(key[0][1] for key, recorded in forward.graphs.items() if recorded is not None)
    assert lengths == [64, 128]  # the prompts' two buckets, each recorded once
    apply(pipe.components, PerformanceSettings())
    assert not is_graphed(pipe.components.text_encoder)


@needs_cuda
@torch.inference_mode()
def test_a_replay_hands_back_its_own_copy(tiny_wan_dir):
    encoder = load_components(teacher_path=tiny_wan_dir, device="cuda").text_encoder
    graph_text_encoder(encoder)
    mask = torch.ones(1, 64, dtype=torch.long, device="cuda")
    encoder(torch.full((1, 64), 3, device="cuda"), mask)  # the shape's first call runs eagerly; the next two replay
    first = encoder(torch.full((1, 64), 5, device="cuda"), mask).last_hidden_state
    kept = first.clone()
    second = encoder(torch.full((1, 64), 9, device="cuda"), mask).last_hidden_state
    assert torch.equal(first, kept) and not torch.equal(first, second)  # the next replay did not overwrite it


def test_the_gpu_report_shows_the_encoding_with_and_without_graphs():
    from benchmarks.gpu_report import other_row

    value = {"graphs_s": 0.0089, "eager_s": 0.0329, "graphs_vs_eager": 0.27, "bit_equal": True, "token_lengths": [64]}
    row = other_row({}, "1.3b@480x832/text_graphs", value)
    assert "CUDA graphs 8.9 ms, eager 32.9 ms (0.27x)" in row and "bit for bit: True" in row


def test_stock_with_the_same_knobs_runs_without_this_projects_own(tiny_wan_dir):
    from benchmarks.gpu_sections import diffusers_knobs_only

    components = load_components(teacher_path=tiny_wan_dir, device="cpu")
    apply(components, PerformanceSettings(vae_2d=True))
    graph_text_encoder(components.text_encoder)  # by hand: `apply` graphs it on CUDA only
    graphed = components.text_encoder.forward
    with diffusers_knobs_only(components):
        assert not is_graphed(components.text_encoder) and not is_flat(components.vae)
    assert components.text_encoder.forward is graphed and is_flat(components.vae)  # the same graphs, put back
