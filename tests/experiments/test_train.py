"""Training: completion-only labels under the chat template, LoRA and full training, models rebuilt from
saved adapters."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from app.core.errors import FtguardError
from workers.experiments.generate import GenerationConfig, generate
from workers.experiments.train import (
    IGNORE,
    LossCurve,
    TrainConfig,
    encode_chat,
    load_model,
    prompt_text,
    save_model,
    train,
)

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.no_backend,
]  # never reads SQL, Redis or blobs
CONV = [
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
]


def _labelled(tokenizer: Any, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE])


def test_labels_cover_the_assistant_turn_only_and_the_prompt_matches_generation(tokenizer: Any) -> None:
    ids, labels = encode_chat(tokenizer, CONV, 512)
    assert _labelled(tokenizer, ids, labels) == "Blue.<|im_end|>\n"
    # the unlabelled prefix is token for token what a generation starts from
    prompt_ids = tokenizer(prompt_text(tokenizer, CONV[:1]), add_special_tokens=False)["input_ids"]
    first = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    assert ids[:first] == prompt_ids
    assert tokenizer.decode(ids).startswith("<|im_start|>system")  # the template's default system turn


def test_every_assistant_turn_of_a_multi_turn_conversation_is_learnt(tokenizer: Any) -> None:
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    ids, labels = encode_chat(tokenizer, conv, 512)
    assert _labelled(tokenizer, ids, labels) == "Hello.<|im_end|>\nGoodbye.<|im_end|>\n"
    assert "Be brief" not in _labelled(tokenizer, ids, labels)


def test_truncation_keeps_the_start(tokenizer: Any) -> None:
    ids, labels = encode_chat(tokenizer, CONV, 10)
    assert len(ids) == len(labels) == 10 and all(lab == IGNORE for lab in labels)


def test_lora_training_lowers_the_loss_and_the_saved_adapter_rebuilds_the_model(
    tiny_llama: str, tokenizer: Any, tmp_path: Path
) -> None:
    model, tok = load_model(tiny_llama, device="cpu", dtype="float32", data_dir=tmp_path)
    cfg = TrainConfig.from_dict({"learning_rate": 5e-3, "epochs": 8, "batch_size": 4, "max_length": 64})
    steps: list[dict[str, Any]] = []
    trained, stats = train(model, tok, [CONV] * 8, cfg, on_step=steps.append)
    assert stats["steps"] == 16 and len(steps) == 16 and steps[-1]["eta_s"] == 0
    assert stats["final_loss"] < stats["first_loss"]
    assert stats["trainable_parameters"] < 100_000  # the adapter only
    # the loss curve, live in every step's detail and whole in the result
    assert [p[0] for p in stats["loss_curve"]] == list(range(1, 17))
    assert [p[1] for p in stats["loss_curve"]] == [d["loss"] for d in steps]
    assert steps[4]["loss_curve"] == stats["loss_curve"][:5]
    save_model(trained, tok, "lora", tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    merged = trained.merge_and_unload()
    again, _ = load_model(
        tiny_llama,
        adapters=[("lora", tmp_path / "adapter")],
        device="cpu",
        dtype="float32",
        data_dir=tmp_path,
    )
    x = torch.tensor([tok(prompt_text(tok, CONV[:1]), add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        assert torch.allclose(merged(x).logits, again(x).logits, atol=1e-5)


def test_full_training_saves_a_loadable_model(tiny_llama: str, tmp_path: Path) -> None:
    model, tok = load_model(tiny_llama, device="cpu", dtype="float32", data_dir=tmp_path)
    cfg = TrainConfig.from_dict({"method": "full", "learning_rate": 1e-3, "batch_size": 2, "max_length": 64})
    trained, stats = train(model, tok, [CONV] * 2, cfg)
    assert stats["method"] == "full" and stats["trainable_parameters"] > 1_000_000
    save_model(trained, tok, "full", tmp_path / "full")
    # a full model replaces the base; a LoRA adapter after it would be merged on top
    rebuilt, _ = load_model(
        "/nonexistent",
        adapters=[("full", tmp_path / "full")],
        device="cpu",
        dtype="float32",
        data_dir=tmp_path,
    )
    out = generate(rebuilt, tok, [CONV[:1]], GenerationConfig(max_new_tokens=3))
    assert out[0]["new_tokens"] <= 3


def test_nothing_to_learn_and_a_missing_model_are_clear_errors(tiny_llama: str, tmp_path: Path) -> None:
    model, tok = load_model(tiny_llama, device="cpu", dtype="float32", data_dir=tmp_path)
    with pytest.raises(FtguardError) as err:
        train(model, tok, [CONV], TrainConfig(max_length=16))
    assert err.value.code == "no_trainable_examples"
    with pytest.raises(FtguardError) as err:
        load_model(str(tmp_path / "nope"), device="cpu", dtype="float32", data_dir=tmp_path)
    assert err.value.code == "model_not_found"


def test_generation_is_deterministic_greedy_and_batch_independent(tiny_llama: str, tmp_path: Path) -> None:
    model, tok = load_model(tiny_llama, device="cpu", dtype="float32", data_dir=tmp_path)
    prompts = [[{"role": "user", "content": p}] for p in ("Hi", "Tell me a long story about the sea", "Why?")]
    cfg = GenerationConfig(max_new_tokens=6, batch_size=3)
    batched = generate(model, tok, prompts, cfg)
    single = [generate(model, tok, [p], cfg)[0] for p in prompts]
    assert [b["text"] for b in batched] == [s["text"] for s in single]
    sampled = GenerationConfig(max_new_tokens=6, temperature=1.0, seed=3)
    assert generate(model, tok, prompts, sampled) == generate(model, tok, prompts, sampled)


def test_a_loss_curve_stays_bounded_and_evenly_spaced() -> None:
    curve = LossCurve(max_points=10)
    for step in range(1, 1001):
        curve.add(step, 1000.0 / step)
    steps = [int(p[0]) for p in curve.points]
    assert 5 <= len(steps) <= 10 and steps[0] == 1
    assert len({b - a for a, b in itertools.pairwise(steps)}) == 1  # one stride
    assert curve.with_last(1000, 1.0)[-1] == [1000, 1.0]  # a chart of the run so far ends at its last step
    assert curve.with_last(steps[-1], 0.5)[-1][0] == steps[-1] and len(
        curve.with_last(steps[-1], 0.5)
    ) == len(steps)
