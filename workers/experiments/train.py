"""Supervised training of a causal LM on chat examples: the chat template applied, the loss on the assistant
tokens only, LoRA through peft by default (or every weight), and models built from a base plus the adapters
of earlier stages.

Completion-only labels: the templated conversation is cut at the assistant turns (the text a generation
prompt ends with, then the assistant's content and end-of-turn marker) and each piece is tokenised on its
own, so the prompt part is exactly the tokens the model sees at generation time and the labels cover only
what the model must learn to say (its end-of-turn token included, so it learns to stop).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.core.errors import FtguardError

if TYPE_CHECKING:
    import torch

IGNORE = -100
CURVE_POINTS = 200  # a loss curve keeps at most this many (step, loss) points, evenly spaced


class LossCurve:
    """(step, loss) points for a chart, bounded: when full, every other point goes and the stride doubles,
    so a run of any length keeps evenly spaced points from its first step to its latest."""

    def __init__(self, max_points: int = CURVE_POINTS) -> None:
        self.max_points, self.stride = max_points, 1
        self.points: list[list[float]] = []

    def add(self, step: int, loss: float) -> None:
        if (step - 1) % self.stride:
            return
        self.points.append([step, round(loss, 5)])
        if len(self.points) > self.max_points:
            self.points, self.stride = self.points[::2], self.stride * 2

    def with_last(self, step: int, loss: float) -> list[list[float]]:
        """The points, ending at `step` even between strides (what a chart of the run so far shows)."""
        tail = [] if self.points and self.points[-1][0] == step else [[step, round(loss, 5)]]
        return [*self.points, *tail]


OnStep = Callable[[dict[str, Any]], None]  # called after every optimiser step; may raise to stop
Chat = Sequence[dict[str, str]]  # one conversation: its messages, {"role", "content"}


@dataclass
class LoraConfigSpec:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


@dataclass
class TrainConfig:
    method: str = "lora"
    lora: LoraConfigSpec = field(default_factory=LoraConfigSpec)
    learning_rate: float = 2e-4
    epochs: int = 1
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: str = "auto"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "lora"}
        return cls(**known, lora=LoraConfigSpec(**d.get("lora", {})))


# ---------------------------------------------------------------------------------------------- encoding


def _template(tokenizer: Any, messages: Sequence[dict[str, str]], *, generation_prompt: bool) -> str:
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=generation_prompt
            )
        )
    # No template: "role: content" lines, the same plain form the causal-LM representer falls back to.
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if generation_prompt else "")


def prompt_text(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The text a generation starts from: the conversation so far and the assistant's turn opened."""
    return _template(tokenizer, messages, generation_prompt=True)


def _segments(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
    """The templated conversation as (text, is_completion) pieces."""
    full = _template(tokenizer, messages, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _template(tokenizer, messages[:i], generation_prompt=True)
        upto = _template(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (full.startswith(upto) and upto.startswith(before)):
            spans = []
            break
        spans.append((len(before), len(upto)))
    if not spans:
        # A template that rewrites earlier turns (some drop past reasoning): learn the last answer only.
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        before = _template(tokenizer, messages[:last], generation_prompt=True)
        if not full.startswith(before):
            raise FtguardError(
                "the model's chat template is not prefix-stable; cannot tell the completion tokens apart",
                code="unsupported_chat_template",
            )
        spans = [(len(before), len(full))]
    pieces, pos = [], 0
    for start, end in spans:
        if start > pos:
            pieces.append((full[pos:start], False))
        pieces.append((full[start:end], True))
        pos = end
    if pos < len(full):
        pieces.append((full[pos:], False))
    return pieces


def encode_chat(
    tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids and labels (IGNORE outside the assistant turns), cut to `max_length` from the end."""
    ids: list[int] = []
    labels: list[int] = []
    templated = bool(getattr(tokenizer, "chat_template", None))
    for i, (text, completion) in enumerate(_segments(tokenizer, messages)):
        # A chat template writes its own special tokens; plain text gets the tokenizer's BOS (if any) once.
        toks = tokenizer(text, add_special_tokens=(not templated and i == 0))["input_ids"]
        ids.extend(toks)
        labels.extend(toks if completion else [IGNORE] * len(toks))
    if not templated and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    return ids[:max_length], labels[:max_length]


# ---------------------------------------------------------------------------------------------- models


@contextmanager
def _peft_quietly() -> Iterator[None]:
    """peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`: nothing for us to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def resolve_precision(precision: str, device: str, method: str = "lora") -> tuple[str, str | None]:
    """(dtype the weights are loaded in, autocast dtype or None). auto: bf16 on CUDA, fp32 on CPU.

    LoRA under bf16 keeps the frozen base in bf16 (peft keeps the adapter in fp32); full training keeps
    fp32 master weights and runs the forward under bf16 autocast, so AdamW's updates are not lost to
    bf16 rounding.
    """
    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") else "fp32"
    if precision == "fp32":
        return "float32", None
    return ("float32" if method == "full" else "bfloat16"), "bfloat16"


def load_model(
    base: str, *, adapters: Sequence[tuple[str, Path]] = (), device: str, dtype: str, data_dir: Path
) -> tuple[Any, Any]:
    """The base model with earlier stages applied: `adapters` is (method, folder) in order; a full model
    replaces what came before it, a LoRA adapter is merged into it."""
    from workers.representations.loading import load_causal_lm

    start = base
    for i, (method, folder) in enumerate(adapters):
        if method == "full":
            start, adapters = str(folder), adapters[i + 1 :]
            break
    try:
        model, tokenizer = load_causal_lm(start, device=device, dtype=dtype, data_dir=data_dir)
    except (OSError, ValueError) as exc:
        raise FtguardError(
            f"cannot load the model {start!r}: not a local model folder or a cached Hugging Face id",
            code="model_not_found",
        ) from exc
    for method, folder in adapters:
        if method != "lora":
            continue
        from peft import PeftModel

        with _peft_quietly():
            model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def save_model(model: Any, tokenizer: Any, method: str, folder: Path) -> None:
    """LoRA: the adapter alone (a few MB). Full: the weights and the tokenizer (a loadable model folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if method == "full":
        tokenizer.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------- training


def _batch(rows: list[tuple[list[int], list[int]]], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, lab) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, : len(lab)] = torch.tensor(lab)
        mask[r, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def checkpoint_steps(fractions: Sequence[float], total: int) -> dict[int, list[float]]:
    """Step -> the fractions saved after it (0 and 1 are the models before and after training)."""
    out: dict[int, list[float]] = {}
    for f in fractions:
        if 0.0 < f < 1.0:
            out.setdefault(min(total, max(1, round(f * total))), []).append(f)
    return out


def train(
    model: Any,
    tokenizer: Any,
    chats: Sequence[Chat],
    cfg: TrainConfig,
    *,
    on_step: OnStep | None = None,
    checkpoints: Sequence[float] = (),
    on_checkpoint: Callable[[float, Any], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train in place, on the device the model is on; returns the trained model (a PeftModel under LoRA) and
    what happened.

    `checkpoints`: fractions of the steps (strictly between 0 and 1) after which `on_checkpoint(fraction,
    model)` is called, to save the model part-way for a durability curve."""
    import torch

    t0 = time.perf_counter()
    encoded = [encode_chat(tokenizer, msgs, cfg.max_length) for msgs in chats]
    device = str(model.device)
    rows = [(ids, lab) for ids, lab in encoded if any(x != IGNORE for x in lab[1:])]
    if not rows:
        raise FtguardError(
            f"no example keeps an assistant token within max_length={cfg.max_length}",
            code="no_trainable_examples",
        )
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora.rank,
            lora_alpha=cfg.lora.alpha,  # type: ignore[arg-type]  # peft accepts a float
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules,
            task_type="CAUSAL_LM",
        )
        with _peft_quietly():
            model = get_peft_model(model, lora)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_ratio * total)

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    _, autocast = resolve_precision(cfg.precision, device)
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    save_at = checkpoint_steps(checkpoints, total)
    model.train()
    losses: list[float] = []
    curve = LossCurve()
    step = 0
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(rows))
        for b in range(steps_per_epoch):
            batch = _batch(
                [rows[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]], pad_id, device
            )
            with torch.autocast(
                dev_type, dtype=getattr(torch, autocast or "float32"), enabled=autocast is not None
            ):
                loss = model(**batch, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimiser.step()
            scheduler.step()
            optimiser.zero_grad(set_to_none=True)
            step += 1
            losses.append(float(loss.detach().float()))
            curve.add(step, losses[-1])
            if on_step is not None:
                per_step = (time.perf_counter() - started) / step
                on_step(
                    {
                        "step": step,
                        "total_steps": total,
                        "epoch": epoch + 1,
                        "loss": round(losses[-1], 5),
                        "learning_rate": float(scheduler.get_last_lr()[0]),
                        "eta_s": round(per_step * (total - step), 1),
                        "loss_curve": curve.with_last(step, losses[-1]),
                    }
                )
            if on_checkpoint is not None:
                for frac in save_at.get(step, []):
                    model.eval()
                    on_checkpoint(frac, model)
                    model.train()
    model.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return model, {
        "method": cfg.method,
        "examples": len(rows),
        "skipped_examples": len(encoded) - len(rows),
        "steps": step,
        "epochs": cfg.epochs,
        "tokens": int(sum(len(ids) for ids, _ in rows)),
        "completion_tokens": int(sum(sum(1 for x in lab if x != IGNORE) for _, lab in rows)),
        "first_loss": round(losses[0], 5),
        "final_loss": round(float(np.mean(tail)), 5),
        "mean_loss": round(float(np.mean(losses)), 5),
        "loss_curve": curve.with_last(step, losses[-1]),
        "trainable_parameters": int(sum(p.numel() for p in params)),
        "seconds": round(time.perf_counter() - t0, 2),
    }
