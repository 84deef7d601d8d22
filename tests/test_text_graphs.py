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
from wan_t2i.text_graphs import (
    GraphedForward,
    graph_text_encoder,
    is_graphed,
    slots_of,
    ungraph_text_encoder,
    weights_key,
)

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


@torch.no_grad()
def test_the_weights_key_tells_replaced_and_moved_weights_from_ones_changed_in_place(tiny_wan_dir):
    """What the graphs check before each replay (a graph reads the weights where they lay when it was recorded):
    replacing a weight, swapping a layer, casting the module or quantising it with torchao changes the key; a weight
    changed in place does not (the graphs read its new values)."""
    encoder = load_components(teacher_path=tiny_wan_dir, device="cpu").text_encoder
    slots = slots_of(encoder)
    key = weights_key(slots)
    assert weights_key(slots) == key
    layer = encoder.encoder.block[0].layer[0].SelfAttention
    layer.q.weight.mul_(2)  # in place: same tensor, same storage
    assert weights_key(slots) == key
    layer.q.weight = torch.nn.Parameter(layer.q.weight.clone())  # replaced
    assert weights_key(slots) != key
    key = weights_key(slots)
    layer.k = torch.nn.Linear(layer.k.in_features, layer.k.out_features, bias=False)  # a layer swapped
    assert weights_key(slots) != key
    slots = slots_of(encoder)
    key = weights_key(slots)
    encoder.to(torch.bfloat16)  # moved: the same Parameters, new storage
    assert weights_key(slots) != key
    torchao = pytest.importorskip("torchao.quantization")
    slots = slots_of(encoder)
    key = weights_key(slots)
    torchao.quantize_(encoder, torchao.Int8WeightOnlyConfig(set_inductor_config=False))
    assert weights_key(slots) != key


@needs_cuda
@torch.inference_mode()
def test_graphs_recorded_before_the_weights_were_replaced_are_dropped(tiny_wan_dir):
    """A graph replayed after its weights were replaced would read freed memory (an illegal memory access on an H100
    once the encoder was quantised after its graphs were recorded): the encoder records anew and gives what the
    changed encoder gives eagerly."""
    encoder = load_components(teacher_path=tiny_wan_dir, device="cuda").text_encoder
    graph_text_encoder(encoder)
    ids, mask = torch.full((1, 64), 3, device="cuda"), torch.ones(1, 64, dtype=torch.long, device="cuda")
    for _ in range(3):  # eager, recorded, replayed
        encoder(ids, mask)
    assert len(encoder.forward.graphs) == 1
    layer = encoder.encoder.block[0].layer[0].SelfAttention
    layer.q.weight = torch.nn.Parameter(layer.q.weight * 2)
    changed = encoder(ids, mask).last_hidden_state  # the shape's first call again: eager
    assert encoder.forward.graphs == {}
    expected = type(encoder).forward(encoder, ids, mask).last_hidden_state
    assert torch.equal(changed, expected)
    for _ in range(2):  # recorded and replayed on the new weights
        assert torch.equal(encoder(ids, mask).last_hidden_state, expected)
    assert len(encoder.forward.graphs) == 1
