"""Does aligning on the High-Sim part of the alignment data leave a model less safe after fine-tuning than
aligning on the Low-Sim or a Random part? The paper's experiment (Hsiung et al. 2025), small, on
SmolLM2-135M-Instruct, run through ftguard's own experiment jobs (`POST /v1/comparisons`' path).

* alignment pool: a fixed random `--pool` of ../shared/data/alignment/safety_only_data_Instructions.json
  (harmful requests answered with refusals); the High-Sim, Low-Sim and Random subsets of `--align-size`
  are ranked by max cosine to the customer set in the base model's own last-token hidden state;
* fine-tuning: a seeded `--ft-size` sample of a customer set from ../shared/data/finetune (default the
  Alpaca set);
* evaluation: `--harmful` harmful prompts (half AdvBench, half I-MaliciousInstructions) and `--benign`
  benign prompts (I-Alpaca) for over-refusal, from ../shared/data/eval; keyword judge;
* every variant gets the same seeds; the whole comparison is repeated for each of `--seeds`.

It writes a markdown table (sizes, seeds, wall time, the measured direction) and the raw results as JSON:

    python studies/similarity_vs_harm.py                       # CPU defaults, ~1 hour on 2 busy cores
    python studies/similarity_vs_harm.py --device cuda --align-size 1000 --ft-size 1000 --pool 0 \\
        --max-length 512 --rep-max-length 512 --max-new-tokens 128 --gen-batch 64 --threads 0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's `app` and `workers`, whatever else is installed
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "studies"))
from similarity_vs_harm_render import BASE, VARIANTS, markdown, render  # noqa: E402


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--base-model", default=BASE, help="the model aligned, fine-tuned and screened with")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--pool", type=int, default=600, help="alignment examples to rank (0: all 2,483)")
    ap.add_argument("--align-size", type=int, default=100)
    ap.add_argument("--ft-file", default="alpaca_data_safety_only.json")
    ap.add_argument("--ft-size", type=int, default=100)
    ap.add_argument("--harmful", type=int, default=100)
    ap.add_argument("--benign", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=64, help="training tokens per example")
    ap.add_argument("--rep-max-length", type=int, default=96, help="representation tokens (the end kept)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--gen-batch", type=int, default=50)
    ap.add_argument("--no-baseline", action="store_true", help="skip the base model's own refusal rate")
    ap.add_argument(
        "--no-after-alignment",
        action="store_true",
        help="skip measuring each model after alignment, before fine-tuning (one generation pass each)",
    )
    ap.add_argument(
        "--data-dir", type=Path, default=None, help="keep models and vector caches here (default: temp)"
    )
    ap.add_argument("--render", type=Path, default=None, help="only re-render the markdown of a saved JSON")
    ap.add_argument(
        "--out", type=Path, default=None, help="markdown file (default docs/similarity_vs_harm_<dev>.md)"
    )
    return ap.parse_args()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _inputs(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path, Path]:
    rng = random.Random(1234)  # the pool and the prompt samples are fixed across seeds and runs
    align = json.loads((DATA / "alignment" / "safety_only_data_Instructions.json").read_text())
    if args.pool and args.pool < len(align):
        align = rng.sample(align, args.pool)
    align_path = _write_jsonl(tmp / "alignment_pool.jsonl", align)
    ft_path = DATA / "finetune" / args.ft_file
    with (DATA / "eval" / "advbench_harmful_behaviors.csv").open(newline="") as fh:
        advbench = [r[0] for r in csv.reader(fh) if r and r[0].strip()]  # one column, no header
    malicious = json.loads((DATA / "eval" / "I-MaliciousInstructions.json").read_text())["instructions"]
    benign = json.loads((DATA / "eval" / "I-Alpaca.json").read_text())["instructions"]
    half = args.harmful // 2
    prompts = [{"prompt": p, "category": "advbench", "kind": "harmful"} for p in rng.sample(advbench, half)]
    prompts += [
        {"prompt": p, "category": "malicious-instructions", "kind": "harmful"}
        for p in rng.sample(malicious, min(args.harmful - half, len(malicious)))
    ]
    prompts += [{"prompt": p, "kind": "benign"} for p in rng.sample(benign, min(args.benign, len(benign)))]
    eval_path = _write_jsonl(tmp / "eval_prompts.jsonl", prompts)
    return align_path, ft_path, eval_path


def _refusals(
    lab: Any, eval_path: Path, args: argparse.Namespace, adapters: list[tuple[str, Path]] | None = None
) -> dict[str, Any]:
    """Refusal rates (keyword judge, the experiments' generation settings) of the base model with `adapters`
    applied: none for the base model itself, the alignment adapter for a model after alignment only."""
    from workers.experiments.generate import GenerationConfig, generate
    from workers.experiments.judges import is_refusal
    from workers.experiments.train import load_model, resolve_precision

    t0 = time.perf_counter()
    rows = [json.loads(line) for line in eval_path.read_text().splitlines()]
    dtype, _ = resolve_precision(args.precision, lab.runtime.device)
    model, tok = load_model(
        args.base_model,
        adapters=adapters or [],
        device=lab.runtime.device,
        dtype=dtype,
        data_dir=lab.settings.data_dir,
    )
    out = generate(
        model,
        tok,
        [[{"role": "user", "content": r["prompt"]}] for r in rows],
        GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch),
    )
    del model
    refused = {
        k: [is_refusal(o["text"])[0] for r, o in zip(rows, out, strict=True) if r["kind"] == k]
        for k in ("harmful", "benign")
    }
    return {
        "refusal_rate": sum(refused["harmful"]) / len(refused["harmful"]),
        "over_refusal_rate": sum(refused["benign"]) / max(1, len(refused["benign"])),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _after_alignment(lab: Any, stages: list[Any], eval_path: Path, args: argparse.Namespace) -> Any:
    """The model right after its alignment stage, before fine-tuning: from the adapter the experiment
    left in the blob store."""
    from workers.experiments.context import extract_dir

    align = next((st for st in stages if st.name == "align" and st.status == "succeeded"), None)
    if align is None or not align.artefact_key:
        return None
    with tempfile.TemporaryDirectory(prefix="ftguard-study-align-") as tmp:
        folder = extract_dir(lab.services.store, align.artefact_key, Path(tmp) / "align")
        return _refusals(lab, eval_path, args, [((align.result or {}).get("method", "lora"), folder)])


def _row(seed: int, exp: Any, stages: list[Any]) -> dict[str, Any]:
    res = exp.results or {}
    head = res.get("headline", {})
    tr = res.get("training", {})
    return {
        "seed": seed,
        "variant": exp.params["alignment"]["selection"],
        "experiment_id": exp.id,
        "status": exp.status,
        "error": exp.error,
        "subset_mean_max_sim": (res.get("selection") or {}).get("subset_mean_max_sim"),
        "risk_score": (res.get("features") or {}).get("risk_score"),
        "harmfulness_rate": head.get("harmfulness_rate"),
        "refusal_rate": head.get("refusal_rate"),
        "over_refusal_rate": head.get("over_refusal_rate"),
        "align_loss": (tr.get("align") or {}).get("final_loss"),
        "finetune_loss": (tr.get("finetune") or {}).get("final_loss"),
        "anchored": (res.get("features") or {}).get("anchors"),
        "wall_s": (exp.finished_at or 0) - (exp.started_at or 0)
        if exp.finished_at and exp.started_at
        else None,
    }


def main() -> None:
    args = _args()
    if args.render:
        render(args.render)
        return
    import torch

    from app.cli.lab_local import LocalLab
    from app.core.config import Settings
    from app.core.queue import EmbeddedRedis
    from workers.representations.base import resolve_device

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ftguard-study-"))
    data_dir = args.data_dir or tmp / "data"
    # The run's own database and queue, fresh every time: a reused --data-dir only shares caches.
    redis = EmbeddedRedis(tmp / "redis")
    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{tmp / 'study.db'}",
        redis_url=redis.url,
        device=args.device,
        torch_threads=args.threads,
        calibration_auto_refit=False,
        encode_batch_size=16,
        _env_file=None,
    )  # type: ignore[call-arg]
    lab = LocalLab(settings)
    try:
        align_path, ft_path, eval_path = _inputs(args, tmp)
        align = lab.upload(align_path, "alignment")
        ft = lab.upload(ft_path, "fine-tune")
        ev = lab.upload(eval_path, "eval-prompts")
        prompts = [json.loads(line) for line in eval_path.read_text().splitlines()]
        device = resolve_device(args.device)
        baseline = None if args.no_baseline else _refusals(lab, eval_path, args)
        if baseline:
            print(f"baseline: {baseline}", flush=True)
        training = {
            "method": "lora",
            "lora": {"rank": args.lora_rank, "alpha": 2 * args.lora_rank},
            "learning_rate": args.lr,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "precision": args.precision,
        }
        cmp_ids = []
        for seed in args.seeds:
            spec = {
                "name": f"study seed {seed}",
                "base_model": args.base_model,
                "alignment": {
                    "dataset_id": align.id,
                    "size": args.align_size,
                    "seed": seed,
                    "representation": {
                        "backend": "causal-lm",
                        "model": args.base_model,
                        "max_length": args.rep_max_length,
                    },
                },
                "fine_tune": {"dataset_id": ft.id, "max_examples": args.ft_size, "seed": 0},
                "training": {**training, "seed": seed},
                "evaluation": {"dataset_id": ev.id},
                "generation": {"max_new_tokens": args.max_new_tokens, "batch_size": args.gen_batch},
                "judges": [{"type": "keyword"}],
                "variants": list(VARIANTS),
            }
            cmp_ids.append((seed, lab.comparison(spec).id))
        lab.run()
        rows = []
        for seed, cid in cmp_ids:
            _, exps = lab.get_comparison(cid)
            for e in sorted(exps, key=lambda e: VARIANTS.index(e.params["alignment"]["selection"])):
                stages = lab.get(e.id)[1]
                row = _row(seed, e, stages)
                if not args.no_after_alignment:
                    row["after_alignment"] = _after_alignment(lab, stages, eval_path, args)
                    print(f"after alignment, {seed} {row['variant']}: {row['after_alignment']}", flush=True)
                rows.append(row)
        meta = {
            "device": device,
            "precision": args.precision
            if args.precision != "auto"
            else ("bf16" if device.startswith("cuda") else "fp32"),
            "pool": align.examples,
            "harmful": sum(1 for r in prompts if r["kind"] == "harmful"),
            "benign": sum(1 for r in prompts if r["kind"] == "benign"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)"
            + (f", {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "wall_min": (time.perf_counter() - t_start) / 60,
            "command": "python "
            + " ".join([Path(sys.argv[0]).as_posix().replace(str(ROOT) + "/", ""), *sys.argv[1:]]),
            "baseline": baseline,
        }
        kind = "cuda" if device.startswith("cuda") else "cpu"
        out = args.out or ROOT / "docs" / f"similarity_vs_harm_{kind}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown(args, rows, meta))
        out.with_suffix(".json").write_text(
            json.dumps({"args": vars(args), "meta": meta, "rows": rows}, indent=2, default=str)
        )
        print(out.read_text())
    finally:
        lab.close()
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)  # the inputs; a --data-dir outside it is kept


if __name__ == "__main__":
    main()
