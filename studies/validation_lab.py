"""The validation study's lab (studies/validation.py): its state file, the work dir it is bound to, and the
experiments it runs through ftguard's own path (`app.cli.lab_local.LocalLab`)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from validation_inputs import read_json, sha, write_rows

BASE = "bundled:smollm2-135m-instruct"


class State:
    """The study's results so far, one JSON file, rewritten after every finished run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = read_json(path) if path.exists() else {"runs": {}}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def bind_work_dir(args: argparse.Namespace, state: State) -> None:
    """The state (results, kept in git) outlives the work dir (models and a database, not kept). Met by a work
    dir it was not written in, its dataset ids mean nothing there: they are dropped, and the reference model
    is marked to be rebuilt and checked against its recorded answers (`adopt_rebuilt_reference`)."""
    token_file = args.work_dir / "lab_id"
    if not token_file.exists():
        token_file.write_text(hashlib.sha256(os.urandom(16)).hexdigest()[:16])
    token = token_file.read_text().strip()
    if state.data.get("lab") == token:
        return
    state.data["uploads"] = {}
    if state.data.get("reference"):
        state.data["reference"]["rebuild"] = True
    state.data["lab"] = token
    state.save()


def tiny_llama(folder: Path) -> str:
    """A random-initialised 2-layer Llama with SmolLM2's tokenizer (the smoke run's model)."""
    if (folder / "config.json").exists():
        return str(folder)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from workers.representations.loading import load_tokenizer

    tok = load_tokenizer(BASE)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def make_lab(args: argparse.Namespace) -> Any:
    from app.cli.lab_local import LocalLab
    from app.core.config import Settings

    data_dir = args.work_dir / "data"
    overrides: dict[str, Any] = {}
    if args.smoke:
        overrides = {"anchor_model": args.base_model}
    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{args.work_dir / 'study.db'}",
        redis_url=None,
        device=args.device,
        torch_threads=args.threads,
        calibration_auto_refit=False,
        log_level="WARNING",
        **overrides,
        _env_file=None,
    )  # type: ignore[call-arg]
    return LocalLab(settings)


def training_spec(args: argparse.Namespace, lr: float, epochs: int, seed: int) -> dict[str, Any]:
    return {
        "method": "lora",
        "lora": {"rank": args.lora_rank, "alpha": 2 * args.lora_rank},
        "learning_rate": lr,
        "epochs": epochs,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "precision": args.precision,
        "seed": seed,
        "warmup_ratio": 0.0,
    }


def outcomes_of(lab: Any, exp_id: str) -> dict[str, Any]:
    """Per checkpoint, the keyword judge's verdicts in prompt order (harmful: 1 = complied; benign: 1 =
    refused), for bootstrap intervals over prompts."""
    exp, stages = lab.get(exp_id)
    if exp.status != "succeeded":
        raise RuntimeError(f"experiment {exp.id} {exp.status}: {exp.error}")
    judge = next(s for s in stages if s.name == "judge")
    out: dict[str, dict[str, list[int]]] = {}
    with lab.services.store.open(judge.artefact_key) as fh:
        rows = [json.loads(line) for line in fh.read().decode().splitlines()]
    for r in sorted((r for r in rows if r["judge"] == "keyword"), key=lambda r: r["index"]):
        point = out.setdefault(f"{float(r.get('checkpoint', 1.0)):.4f}", {"harmful": [], "benign": []})
        if r["kind"] == "harmful":
            point["harmful"].append(int(bool(r["harmful"])))
        else:
            point["benign"].append(int(bool(r["refused"])))
    res = exp.results or {}
    return {
        "experiment_id": exp.id,
        "outcomes": out,
        "durability": res.get("durability"),
        "finetune_loss": ((res.get("training") or {}).get("finetune") or {}).get("final_loss"),
        "steps": ((res.get("training") or {}).get("finetune") or {}).get("steps"),
        "wall_s": (exp.finished_at or 0) - (exp.started_at or 0),
    }


def run_experiment(lab: Any, spec: dict[str, Any]) -> dict[str, Any]:
    exp = lab.experiment(spec)
    lab.run()
    return outcomes_of(lab, exp.id)


def upload(lab: Any, state: State, name: str, rows: list[dict[str, Any]], purpose: str) -> str:
    """Upload once per content; the dataset id is kept in the state."""
    key = f"{name}:{sha(rows)}"
    ids = state.data.setdefault("uploads", {})
    if key not in ids:
        path = write_rows(lab.settings.data_dir / "inputs" / f"{name}.jsonl", rows)
        ids[key] = lab.upload(path, purpose).id
        state.save()
    return str(ids[key])


def harm_of(run: dict[str, Any]) -> float:
    points = [v["harmful"] for k, v in run["outcomes"].items() if float(k) > 0]
    return sum(sum(p) / max(1, len(p)) for p in points) / max(1, len(points))


def adopt_rebuilt_reference(state: State, old: dict[str, Any], new_id: str, outcomes: dict[str, Any]) -> None:
    """The state came from another work dir (another machine, or a session whose models are gone), so the
    reference model was aligned again from the same inputs and seed. Its runs stay valid only if the rebuilt
    model answers every evaluation prompt exactly as the recorded one did; otherwise they are set aside under
    `stale_runs` (kept, never analysed) with the pilot, and the study reruns them."""
    same = outcomes == old.get("outcomes")
    old_id, runs = str(old["experiment_id"]), state.data["runs"]
    tag, retag = f"|ref={old_id}", f"|ref={new_id}"
    if same:
        state.data["runs"] = {k.replace(tag, retag): v for k, v in runs.items()}
        print(
            f"reference model rebuilt: identical on every prompt; {len(runs)} recorded runs kept", flush=True
        )
        return
    flips = sum(
        a != b
        for kind in ("harmful", "benign")
        for a, b in zip(outcomes.get(kind, []), (old.get("outcomes") or {}).get(kind, []), strict=False)
    )
    state.data.setdefault("stale_runs", {})[old_id] = {"runs": runs, "pilot": state.data.pop("pilot", None)}
    state.data["runs"] = {}
    print(
        f"reference model rebuilt: {flips} prompt(s) answered differently; {len(runs)} runs set aside",
        flush=True,
    )
