"""Answers of a model to the evaluation prompts: chat template with the assistant turn opened, batched,
left-padded, greedy by default (seeded sampling when a temperature is set)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from workers.experiments.train import Chat, prompt_text

OnBatch = Callable[[int, int], None]  # (prompts done, total); may raise to stop


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 16
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def stop_ids(tokenizer: Any) -> list[int]:
    """End-of-sequence and end-of-turn ids: chat models end an answer with an end-of-turn token (SmolLM2's
    `<|im_end|>`) that is not always the tokenizer's EOS."""
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def generate(
    model: Any,
    tokenizer: Any,
    chats: Sequence[Chat],
    cfg: GenerationConfig,
    *,
    on_batch: OnBatch | None = None,
) -> list[dict[str, Any]]:
    """One answer per chat, in order: {"text", "new_tokens", "finished"}, on the device the model is on."""
    import torch
    from transformers import GenerationConfig as HFGenerationConfig

    ids = [
        tokenizer(
            prompt_text(tokenizer, msgs), add_special_tokens=not getattr(tokenizer, "chat_template", None)
        )["input_ids"]
        for msgs in chats
    ]
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    stops = stop_ids(tokenizer)
    sampling = cfg.temperature > 0
    gen_cfg = HFGenerationConfig(
        max_new_tokens=cfg.max_new_tokens,
        do_sample=sampling,
        temperature=cfg.temperature if sampling else None,
        top_p=cfg.top_p if sampling else None,
        top_k=None,
        pad_token_id=pad_id,
        eos_token_id=stops,
    )
    out: list[dict[str, Any]] = [{} for _ in ids]
    # Longest first: batches pad little, and an out-of-memory shows on the first batch.
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    done = 0
    with torch.inference_mode():
        for b, start in enumerate(range(0, len(order), cfg.batch_size)):
            idx = order[start : start + cfg.batch_size]
            width = max(len(ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                input_ids[r, width - len(ids[i]) :] = torch.tensor(ids[i])
                mask[r, width - len(ids[i]) :] = 1
            if sampling:
                torch.manual_seed(cfg.seed + b)
            gen = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=mask.to(model.device),
                generation_config=gen_cfg,
            )
            new = gen[:, width:].cpu()
            for r, i in enumerate(idx):
                row = new[r].tolist()
                ended = [k for k, t in enumerate(row) if t in stops]
                kept = row[: ended[0]] if ended else row
                out[i] = {
                    "text": tokenizer.decode(kept, skip_special_tokens=True).strip(),
                    "new_tokens": len(kept),
                    "finished": bool(ended),
                }
            done += len(idx)
            if on_batch is not None:
                on_batch(done, len(ids))
    return out
