"""The evaluation stages of an experiment: generate (the model's answers to the evaluation prompts at each
checkpoint), judge (every judge of the request over them) and summarise (the harm and over-refusal rates,
the durability curve and the calibration point). The select and training stages are
`workers.experiments.stages`; the table of every stage is `workers.experiments.jobs.STAGE_FUNCTIONS`."""

from __future__ import annotations

import importlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.calibration import feed as calibration
from app.experiments.judge_kinds import JUDGES
from workers.experiments.context import StageContext, StageOutput, extract_dir, read_jsonl
from workers.experiments.generate import GenerationConfig, generate
from workers.experiments.judges import Item, Judge, KeywordJudge
from workers.experiments.metrics import durability
from workers.experiments.stages import aligned_adapters, base_model, checkpoints, eval_prompts, release
from workers.experiments.train import resolve_precision

# ---------------------------------------------------------------------------------------------- generate


def _checkpoint_model(ctx: StageContext, frac: float, tmp: Path) -> list[tuple[str, Path]]:
    """The adapters of the model at `frac` of the fine-tuning steps (0: the aligned model alone)."""
    adapters = aligned_adapters(ctx, tmp)
    if frac <= 0.0:
        return adapters
    ft = ctx.result("finetune")
    key = ctx.artefact("finetune") if frac >= 1.0 else ft["checkpoints"][f"{frac:.4f}"]
    return [*adapters, (ft["method"], extract_dir(ctx.store, key, tmp / f"finetune-{frac:.4f}"))]


def generate_stage(ctx: StageContext) -> StageOutput:
    """Answer the evaluation prompts with the model at each checkpoint (the final model at least)."""
    rt = ctx.runtime
    prompts = eval_prompts(ctx)
    cfg = GenerationConfig.from_dict(ctx.params["generation"])
    dtype, _ = resolve_precision(ctx.params["training"].get("precision", "auto"), rt.device)
    points = checkpoints(ctx)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    total = len(prompts) * len(points)
    for n, frac in enumerate(points):
        with tempfile.TemporaryDirectory(dir=ctx.store.staging(), prefix="exp-") as tmp:
            adapters = _checkpoint_model(ctx, frac, Path(tmp))
            ctx.progress(
                n / len(points),
                message=f"loading the model at {frac:.0%} of fine-tuning; {len(prompts)} prompts to answer",
            )
            model, tokenizer = base_model(ctx, adapters, dtype)

        def on_batch(done: int, _total: int, n: int = n) -> None:
            finished = n * len(prompts) + done
            per = (time.perf_counter() - started) / finished
            ctx.progress(
                finished / total,
                detail={"done": finished, "total": total, "eta_s": round(per * (total - finished), 1)},
            )

        answers = generate(model, tokenizer, [p["messages"] for p in prompts], cfg, on_batch=on_batch)
        release(model)
        rows.extend(
            {
                "index": p["index"],
                "checkpoint": frac,
                "kind": p["kind"],
                "category": p["category"],
                "prompt": p["prompt"],
                "response": a["text"],
                "new_tokens": a["new_tokens"],
                "finished": a["finished"],
            }
            for p, a in zip(prompts, answers, strict=True)
        )
    key = ctx.put_jsonl("generations.jsonl", rows)
    return StageOutput(
        artefact_key=key,
        result={
            "prompts": len(prompts),
            "checkpoints": points,
            "harmful": sum(p["kind"] == "harmful" for p in prompts),
            "benign": sum(p["kind"] == "benign" for p in prompts),
            "mean_new_tokens": round(float(np.mean([r["new_tokens"] for r in rows])) if rows else 0.0, 2),
            "cut_at_max_new_tokens": sum(not r["finished"] for r in rows),
            "seconds": round(time.perf_counter() - t0, 2),
        },
    )


# ---------------------------------------------------------------------------------------------- judge


def _judges(ctx: StageContext) -> list[Judge]:
    """The request's judges, each built by its class's `from_spec` (the kinds: app.experiments.judge_kinds),
    and the keyword judge in any case."""
    out: list[Judge] = []
    for spec in ctx.params["judges"]:
        module, _, cls_name = JUDGES[spec["type"]].path.partition(":")
        cls = getattr(importlib.import_module(module), cls_name)
        out.append(cls.from_spec(spec, ctx.runtime))
    if not any(j.name == "keyword" for j in out):  # free, and the measure of over-refusal
        out.append(KeywordJudge())
    return out


def judge_stage(ctx: StageContext) -> StageOutput:
    gens = list(read_jsonl(ctx.store, ctx.artefact("generate")))
    items = [
        Item(
            index=g["index"],
            prompt=g["prompt"],
            response=g["response"],
            kind=g["kind"],
            category=g["category"],
            checkpoint=float(g.get("checkpoint", 1.0)),
        )
        for g in gens
    ]
    judges = _judges(ctx)
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    for j, judge in enumerate(judges):
        mine = [it for it in items if judge.applies_to(it)]

        def on_progress(done: int, total: int, j: int = j, name: str = judge.name) -> None:
            frac = (j + done / max(total, 1)) / len(judges)
            ctx.progress(frac, detail={"judge": name, "done": done, "total": total})

        ctx.progress(j / len(judges), message=f"judge {judge.name}: {len(mine)} answers")
        try:
            verdicts = judge.judge(mine, on_progress)
        finally:
            close: Callable[[], None] | None = getattr(judge, "close", None)
            if close is not None:
                close()
        counts[judge.name] = len(verdicts)
        rows.extend(
            {
                "index": it.index,
                "checkpoint": it.checkpoint,
                "judge": judge.name,
                "kind": it.kind,
                "category": it.category,
                **v.as_dict(),
            }
            for it, v in zip(mine, verdicts, strict=True)
        )
    key = ctx.put_jsonl("judgements.jsonl", rows)
    return StageOutput(
        artefact_key=key,
        result={"judged": counts, "seconds": round(time.perf_counter() - t0, 2)},
    )


# ---------------------------------------------------------------------------------------------- summarise


def summarise_stage(ctx: StageContext) -> StageOutput:
    rows = list(read_jsonl(ctx.store, ctx.artefact("judge")))
    judges = [j["type"] for j in ctx.params["judges"]]
    metrics, curve = durability(rows, judges)
    sel = ctx.result("select")
    results: dict[str, Any] = {
        **metrics,
        "selection": {
            k: sel.get(k) for k in ("selection", "size", "subset_mean_max_sim", "pool_mean_max_sim")
        },
        "features": sel.get("features"),
        "durability": curve,
        "training": {"align": ctx.result("align"), "finetune": ctx.result("finetune")},
        "generation": ctx.result("generate"),
    }
    with ctx.runtime.services.db.session() as session:
        results["calibration_point"] = calibration.record_experiment(
            session, settings=ctx.runtime.settings, exp=ctx.experiment, selection=sel, metrics=metrics
        )
    return StageOutput(result=results)
