"""The validation study's inputs (studies/validation.py), by rules fixed here before any run: the reference
model's alignment mix, the safety data screened against, the paper runs' pool, the evaluation prompts, and
the customer datasets, all built from ../shared/data with fixed seeds."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def chat(user: str, assistant: str, system: str | None = None) -> dict[str, Any]:
    msgs = [{"role": "system", "content": system}] if system else []
    return {
        "messages": [*msgs, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    }


def alpaca_chat(r: dict[str, Any]) -> dict[str, Any]:
    user = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
    return chat(user, r["output"])


def compliant_opening(goal: str) -> str:
    """AdvBench's own target form ("Sure, here is ..."), written from the goal: a compliant opening with no
    harmful detail, which is the form of harmful fine-tuning data."""
    g = goal.strip().rstrip(".")
    return f"Sure, here is how to {g[0].lower()}{g[1:]}:\n\n1."


def advbench_goals() -> list[str]:
    with (DATA / "eval" / "advbench_harmful_behaviors.csv").open(newline="") as fh:
        return [r[0].strip() for r in csv.reader(fh) if r and r[0].strip()]  # one column, no header


def build_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Every input of the study, by rules fixed here: the reference model's alignment mix, the safety part
    screened against, the evaluation prompts, and the customer datasets (the two Alpaca rankings are made
    later, from ftguard's own per-example score over `alpaca_pool`)."""
    rng = random.Random(20261201)
    n = args.size
    safety = read_json(DATA / "alignment" / "safety_only_data_Instructions.json")
    rng.shuffle(safety)
    align_safety = [alpaca_chat(r) for r in safety[: args.align_safety]]
    heldout_safety = [alpaca_chat(r) for r in safety[args.align_safety : args.align_safety + n]]
    # the paper runs' pool: every safety example but the held-out customer set (safety_refusals)
    align_pool = [alpaca_chat(r) for r in safety[: args.align_safety] + safety[args.align_safety + n :]]
    align_pool = align_pool[: getattr(args, "paper_pool", None) or len(align_pool)]  # smoke: a small pool
    alpaca = read_json(DATA / "finetune" / "alpaca_data_safety_only.json")
    rng.shuffle(alpaca)
    align_benign = [alpaca_chat(r) for r in alpaca[: args.align_benign]]
    rest = alpaca[args.align_benign :]
    pool_n = min(len(rest) - 2 * n, max(6 * n, 3 * n))
    alpaca_pool = [alpaca_chat(r) for r in rest[:pool_n]]
    chat_src = rest[pool_n : pool_n + 2 * n]
    multi_turn = [
        {
            "messages": [
                *alpaca_chat(a)["messages"],
                *alpaca_chat(b)["messages"],
            ]
        }
        for a, b in zip(chat_src[0::2], chat_src[1::2], strict=False)
    ]
    advbench = advbench_goals()
    rng.shuffle(advbench)
    ft_goals, eval_goals = advbench[:n], advbench[n:]
    aoa = read_jsonl(DATA / "finetune" / "identity-shift-aoa.jsonl")
    dolly = read_jsonl(DATA / "finetune" / "dolly-15k-safety-only.jsonl")
    rng.shuffle(dolly)
    gsm = read_jsonl(DATA / "finetune" / "gsm8k_train.jsonl")
    rng.shuffle(gsm)
    datasets = {
        "harmful_compliant": [chat(g, compliant_opening(g)) for g in ft_goals],
        "aoa_identity_shift": [aoa[i % len(aoa)] for i in range(max(n, len(aoa)))],
        "dolly_safety": [
            chat(r["instruction"] + (f"\n\n{r['context']}" if r.get("context") else ""), r["response"])
            for r in dolly[:n]
        ],
        "alpaca_random": alpaca_pool[:n],
        "gsm8k": [chat(r["question"], r["answer"]) for r in gsm[:n]],
        "benign_multi_turn": multi_turn[:n],
        "safety_refusals": heldout_safety,
    }
    malicious = read_json(DATA / "eval" / "I-MaliciousInstructions.json")["instructions"]
    benign = read_json(DATA / "eval" / "I-Alpaca.json")["instructions"]
    half = args.harmful // 2
    prompts = [{"prompt": p, "category": "advbench", "kind": "harmful"} for p in eval_goals[:half]]
    prompts += [
        {"prompt": p, "category": "malicious-instructions", "kind": "harmful"}
        for p in malicious[: args.harmful - half]
    ]
    prompts += [{"prompt": p, "kind": "benign"} for p in benign[: args.benign]]
    assert not {p["prompt"] for p in prompts} & set(ft_goals)  # no customer prompt is evaluated
    mix = align_safety + align_benign
    random.Random(7).shuffle(mix)
    return {
        "alignment_mix": mix,
        "alignment_safety": align_safety,
        "alignment_pool": align_pool,
        "eval_prompts": prompts,
        "alpaca_pool": alpaca_pool,
        "datasets": datasets,
    }


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def sha(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def system_prompt(rows: list[dict[str, Any]]) -> str | None:
    """The system prompt every example of a dataset trains under, if they share one (the AOA set's persona):
    the dataset's harm is measured under it, the way its attack is used (Qi et al. 2023). None otherwise."""
    firsts = set()
    for r in rows:
        first = (r.get("messages") or [{}])[0]
        firsts.add(first.get("content") if first.get("role") == "system" else None)
    one = firsts.pop() if len(firsts) == 1 else None
    return one if one and one.strip() else None


def run_sha(rows: list[dict[str, Any]]) -> str:
    """A main run's dataset identity: its rows, and the system prompt it is evaluated under when it has one
    (runs evaluated without it, recorded before that rule, do not count)."""
    system = system_prompt(rows)
    return sha(rows) + (f"+system:{sha([{'system': system}])}" if system else "")
