"""Causal-LM representer: batched features must equal one-at-a-time ones, whatever the padding side.

A tiny random Llama (2 layers, hidden 64) with the real SmolLM2 tokenizer keeps these fast; one slow test
loads the real bundled SmolLM2.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.datasets.formats import Example
from workers.representations.causal_lm import CausalLMRepresenter
from workers.representations.chat_format import format_example
from workers.representations.loading import BUNDLED_SMOLLM2, load_tokenizer

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

TOL = 1e-4


def ex(prompt: str, answer: str, system: str | None = None) -> Example:
    msgs = [{"role": "system", "content": system}] if system else []
    return Example([*msgs, {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])


EXAMPLES = [
    ex("Hi", "Hello!"),
    ex(
        "How do I bake bread?",
        "Mix flour, water, salt and yeast; knead, let it rise, then bake at 230 C. " * 3,
    ),
    ex("Tell me a secret.", "I can't help with that."),
    ex(
        "Summarise: the quick brown fox jumps over the lazy dog.",
        "A fox jumps over a dog.",
        system="You are terse.",
    ),
    ex("x", "y"),
    ex(
        "Write a poem about the sea.",
        "Waves on waves, the grey sea sighs,\nbeneath the wide and windy skies.",
    ),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # A tiny model gains nothing from threads, and OpenMP spin-waits make it 10x slower on a busy CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    # ~6 s out of the GGUF the first time ever; a saved copy under ~/.cache/ftguard after that (~0.2 s).
    return load_tokenizer(BUNDLED_SMOLLM2)


@pytest.fixture(scope="module")
def tiny_model(tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).float().eval()


@pytest.fixture
def make(tokenizer: Any, tiny_model: Any) -> Iterator[Any]:
    side = tokenizer.padding_side

    def build(padding_side: str = "right", **kw: Any) -> CausalLMRepresenter:
        tokenizer.padding_side = padding_side
        return CausalLMRepresenter.from_model(tiny_model, tokenizer, name="tiny-llama", **kw)

    yield build
    tokenizer.padding_side = side


def reference(model: Any, ids: list[int], layer: int = -1, pooling: str = "last") -> np.ndarray:
    """The way published research code does it: one example, full model, hidden_states[layer][0, -1]."""
    with torch.inference_mode():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    hidden = out.hidden_states[layer][0]
    return (hidden[-1] if pooling == "last" else hidden.mean(0)).float().numpy()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_batched_equals_one_at_a_time(make: Any, tiny_model: Any, side: str, pooling: str) -> None:
    batched = make(side, batch_size=4, pooling=pooling)
    single = make(side, batch_size=1, pooling=pooling)
    got = batched.encode(EXAMPLES)
    one = single.encode(EXAMPLES)
    assert got.shape == (len(EXAMPLES), 64) and got.dtype == np.float32
    assert np.abs(got - one).max() < TOL
    ref = np.stack([reference(tiny_model, ids, pooling=pooling) for ids in batched.tokenize(EXAMPLES)])
    assert np.abs(got - ref).max() < TOL


@pytest.mark.parametrize("side", ["left", "right"])
def test_intermediate_layer_matches_hidden_states(make: Any, tiny_model: Any, side: str) -> None:
    rep = make(side, batch_size=3, layer=1)
    got = rep.encode(EXAMPLES)
    ref = np.stack([reference(tiny_model, ids, layer=1) for ids in rep.tokenize(EXAMPLES)])
    assert np.abs(got - ref).max() < TOL
    assert np.abs(got - make(side, layer=-1).encode(EXAMPLES)).max() > TOL  # really another layer


def test_a_middle_layer_runs_no_block_above_it(make: Any, tiny_model: Any) -> None:
    calls = {0: 0, 1: 0}
    before = len(tiny_model.model.layers[0]._forward_hooks)
    hooks = [
        block.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, block in enumerate(tiny_model.model.layers)
    ]
    try:
        middle = make("left", batch_size=3, layer=1).encode(EXAMPLES)
        assert calls[0] > 0 and calls[1] == 0, calls  # block 0 writes layer 1; block 1 never ran
        assert np.array_equal(make("left", batch_size=3, layer=-2).encode(EXAMPLES), middle)  # -2 == 1 of 2
        make("left", batch_size=3).encode(EXAMPLES)
        assert calls[1] > 0  # the final layer runs every block
    finally:
        for h in hooks:
            h.remove()
    assert len(tiny_model.model.layers[0]._forward_hooks) == before  # the stop hook is gone after every pass


@pytest.mark.parametrize("side", ["left", "right"])
def test_every_layer_at_once_equals_each_layer_alone(make: Any, side: str) -> None:
    rep = make(side, batch_size=4)
    every = rep.encode_layers(EXAMPLES)
    assert every.shape == (3, len(EXAMPLES), 64)
    for k in range(3):
        alone = rep.view(layer=k, pooling="last", max_length=rep.max_length).encode(EXAMPLES)
        assert np.abs(every[k] - alone).max() < TOL, k


def test_precision_is_part_of_the_identity(tokenizer: Any, tiny_model: Any) -> None:
    import copy

    from workers.representations import loading

    fp32 = CausalLMRepresenter.from_model(tiny_model, tokenizer, name="tiny-llama")
    bf16 = CausalLMRepresenter.from_model(
        copy.deepcopy(tiny_model), tokenizer, name="tiny-llama", dtype="bfloat16"
    )
    assert "dtype" not in fp32.identity  # the identity vectors cached before precision existed had
    assert bf16.identity.endswith("|layer=-1|pool=last|max_len=512|dtype=bfloat16")
    assert bf16.describe()["dtype"] == "bfloat16"
    cos = [
        float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        for a, b in zip(fp32.encode(EXAMPLES), bf16.encode(EXAMPLES), strict=True)
    ]
    assert min(cos) > 0.99, cos
    assert loading.representation_dtype("cuda", "auto") == "bfloat16"
    assert loading.representation_dtype("cpu", "fp32") == "float32"
    assert loading.representation_dtype("cpu", "bf16") == "bfloat16"
    with pytest.raises(ValueError):
        loading.representation_dtype("cpu", "fp16")


def test_precision_auto_on_cpu_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.representations.loading import representation_dtype
    from workers.screenings import similarity

    monkeypatch.setattr(similarity, "cpu_bf16_sound", lambda: True)
    assert representation_dtype("cpu") == "bfloat16"
    monkeypatch.setattr(similarity, "cpu_bf16_sound", lambda: False)
    assert representation_dtype("cpu") == "float32"  # emulated bf16 is slower than fp32


def test_order_restored_and_progress(make: Any) -> None:
    rep = make("left", batch_size=2)
    seen: list[int] = []
    got = rep.encode(EXAMPLES, progress=seen.append)
    assert sum(seen) == len(EXAMPLES)
    perm = [3, 0, 5, 1, 4, 2]
    assert np.abs(rep.encode([EXAMPLES[i] for i in perm]) - got[perm]).max() < TOL
    assert rep.encode([]).shape == (0, 64)


def test_batches_bucket_by_length_under_caps(make: Any) -> None:
    rep = make(batch_size=3, max_batch_tokens=100)
    lengths = [10, 90, 30, 31, 29, 200, 28, 12]
    batches = rep.batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100)
    assert [200] in [[lengths[i] for i in b] for b in batches]  # too long for the cap: alone, not dropped
    assert make(batch_size=2).batches([5, 5, 5]) == [[0, 1], [2]]
    single = make(batch_size=1).encode(EXAMPLES)
    assert np.abs(make("left", batch_size=8, max_batch_tokens=64).encode(EXAMPLES) - single).max() < TOL


def test_truncation_keeps_the_end(make: Any, tiny_model: Any) -> None:
    full = make("right", max_length=4096).tokenize(EXAMPLES)
    short = make("right", max_length=8)
    cut = short.tokenize(EXAMPLES)
    assert all(c == f[-8:] for c, f in zip(cut, full, strict=True))
    assert any(len(f) > 8 for f in full)
    got = short.encode(EXAMPLES)
    ref = np.stack([reference(tiny_model, f[-8:]) for f in full])
    assert np.abs(got - ref).max() < TOL


def test_chat_template_and_fallback(tokenizer: Any) -> None:
    text = format_example(tokenizer, EXAMPLES[2])
    assert text.rstrip().endswith("I can't help with that.<|im_end|>")
    assert "<|im_start|>assistant" in text and not text.endswith("<|im_start|>assistant\n")
    template = tokenizer.chat_template
    try:
        tokenizer.chat_template = None
        assert (
            format_example(tokenizer, EXAMPLES[2])
            == "user: Tell me a secret.\nassistant: I can't help with that."
        )
    finally:
        tokenizer.chat_template = template


def test_identity_and_describe(make: Any) -> None:
    base = make()
    assert base.identity == make().identity
    assert base.identity.startswith("causal-lm|tiny-llama|")
    others = {make(layer=1).identity, make(pooling="mean").identity, make(max_length=64).identity}
    assert base.identity not in others and len(others) == 3
    d = base.describe()
    assert d["backend"] == "causal-lm" and d["layer"] == -1 and d["pooling"] == "last"
    assert d["dtype"] == "float32" and base.dim == 64
    with pytest.raises(ValueError):
        make(layer=5)
    with pytest.raises(ValueError):
        make(pooling="max")


@pytest.mark.slow
def test_bundled_smollm2(tmp_path: Path) -> None:
    CausalLMRepresenter(BUNDLED_SMOLLM2, device="cpu", data_dir=tmp_path)  # converts the GGUF once
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no temp dir left
    t = time.perf_counter()
    rep = CausalLMRepresenter(BUNDLED_SMOLLM2, device="cpu", data_dir=tmp_path)
    assert time.perf_counter() - t < 2.0
    vecs = rep.encode(EXAMPLES[:3])
    assert vecs.shape == (3, 576) and rep.dim == 576
    assert np.isfinite(vecs).all()
    assert rep.identity.startswith(f"causal-lm|{BUNDLED_SMOLLM2}|")
