"""The stages of an experiment, each a function of its context: read what earlier stages left, do the
work, write the artefact, return the result. Here: the inputs they share, select, align and finetune; the
evaluation stages (generate, judge, summarise) are `workers.experiments.evaluate`. `jobs.run_stage` wraps
them with claiming, heartbeat, cancellation and failure handling (`jobs.STAGE_FUNCTIONS` lists all six)."""

from __future__ import annotations

import gc
import hashlib
import io
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.core import registry
from app.core.errors import FtguardError
from app.core.storage import copy_to, staged_file
from app.datasets import files as datasets
from app.datasets.formats import Example
from app.datasets.validate import iter_examples
from app.demo import EVAL_PROMPTS
from app.models import Dataset
from app.screenings import params as screening_params
from workers.experiments.context import StageContext, StageOutput, extract_dir
from workers.experiments.select import sample, select
from workers.experiments.train import TrainConfig, load_model, resolve_precision, save_model, train
from workers.screenings.progress import Plan, Tick
from workers.screenings.screening import Params, Pass, Side, bundled_anchors, screen

# ---------------------------------------------------------------------------------------------- inputs


def _dataset(ctx: StageContext, which: str) -> Dataset:
    ds_id = ctx.params["datasets"][which]["id"]
    with ctx.runtime.services.db.session() as session:
        ds = session.get(Dataset, ds_id)
    if ds is None or ds.tenant_id != ctx.experiment.tenant_id:
        raise FtguardError(
            f"the {which.replace('_', '-')} dataset {ds_id} was deleted", code="dataset_deleted"
        )
    return ds


def _examples(ctx: StageContext, ds: Dataset) -> list[Example]:
    store, limit = ctx.runtime.services.store, ctx.runtime.settings.max_line_bytes
    return [ex for _, ex in datasets.open_records(store=store, ds=ds, max_line_bytes=limit)]


def eval_prompts(ctx: StageContext) -> list[dict[str, Any]]:
    """Prompts with their kind (harmful, or benign for over-refusal) and category."""
    limit = ctx.runtime.settings.max_line_bytes
    if ctx.params["datasets"]["evaluation"].get("id"):
        ds = _dataset(ctx, "evaluation")
        records = datasets.open_records(store=ctx.runtime.services.store, ds=ds, max_line_bytes=limit)
        pairs = list(records)
    else:
        with EVAL_PROMPTS.open("rb") as fh:
            pairs = list(iter_examples(fh, container="jsonl", fmt="prompts", max_line_bytes=limit))
    out = []
    for rec, ex in pairs:
        value = rec.value if isinstance(rec.value, dict) else {}
        out.append(
            {
                "index": rec.record - 1,
                "messages": ex.messages,
                "prompt": ex.messages[-1]["content"],
                "category": value.get("category") or None,
                "kind": value.get("kind") or "harmful",
            }
        )
    return out


def _selection(ctx: StageContext) -> dict[str, np.ndarray]:
    with (
        ctx.store.open(ctx.artefact("select")) as fh,
        np.load(io.BytesIO(fh.read()), allow_pickle=False) as z,
    ):
        return {k: z[k] for k in z.files}


def release(*objs: Any) -> None:
    """Drop a model before the next stage loads one (a GPU worker keeps running for days)."""
    del objs
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


# ---------------------------------------------------------------------------------------------- select


def _save_selection(ctx: StageContext, **arrays: np.ndarray) -> str:
    key = ctx.key("selection.npz")
    with staged_file(ctx.store, suffix=".npz") as (path, fh):
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy stubs: allow_pickle clash
        fh.write(buf.getvalue())
        fh.close()
        ctx.store.put_file(key, path)
    return key


def _sample_only(ctx: StageContext, ft_idx: np.ndarray, total: int, t0: float) -> StageOutput:
    """A fine-tune-only experiment: nothing to select, the (sampled) fine-tuning set alone."""
    key = _save_selection(
        ctx, alignment_indices=np.zeros(0, dtype=np.int64), finetune_indices=ft_idx, a_max=np.zeros(0)
    )
    return StageOutput(
        artefact_key=key,
        result={
            "selection": None,
            "size": 0,
            "finetune_examples": int(ft_idx.size),
            "finetune_pool": total,
            "features": None,
            "seconds": round(time.perf_counter() - t0, 2),
        },
    )


def select_stage(ctx: StageContext) -> StageOutput:
    p, rt = ctx.params, ctx.runtime
    t0 = time.perf_counter()
    ft_ds = _dataset(ctx, "fine_tune")
    ft_all = _examples(ctx, ft_ds)
    ft_idx = sample(len(ft_all), p["fine_tune"].get("max_examples"), p["fine_tune"]["seed"])
    if p.get("alignment") is None:
        return _sample_only(ctx, ft_idx, len(ft_all), t0)
    al_ds = _dataset(ctx, "alignment")
    al = _examples(ctx, al_ds)
    rep = p["alignment"]["representation"]
    ctx.progress(0.0, message=f"representing {len(al)} alignment and {len(ft_idx)} fine-tuning examples")
    representer = rt.representer(rep)
    cache = rt.cache_for(ctx.experiment.tenant_id)

    def report(t: Tick) -> bool:  # ctx.progress raises to stop: the experiment's own cancellation
        ctx.progress(t.fraction * 0.9, message=t.message)
        return True

    plan = Plan(report)  # both passes weighed by their measured cost (workers.screenings.progress)
    c_sha = ft_ds.sha256 or ""
    if ft_idx.size < len(ft_all):  # a sample has its own vectors in the cache
        c_sha += "-sample-" + hashlib.sha256(ft_idx.tobytes()).hexdigest()[:16]
    a_pass = Pass("represent_alignment", Side("alignment", al, al_ds.sha256 or ""), representer, cache, plan)
    ft = Side("customer", [ft_all[i] for i in ft_idx], c_sha)
    c_pass = Pass("represent_customer", ft, representer, cache, plan)
    a_vec, _ = a_pass.run()
    c_vec, _ = c_pass.run()
    a = p["alignment"]
    block = int(p.get("block_size", 4096))
    idx, a_max = select(
        c_vec,
        a_vec,
        selection=a["selection"],
        size=a["size"],
        seed=a["seed"],
        center=rep.get("center", False),
        block_size=block,
        device=rt.device,
    )
    ctx.progress(0.9, message=f"screening the customer data against the {idx.size} selected examples")
    feats = _screening_features(
        ctx, [ft_all[i] for i in ft_idx], c_sha, [al[int(i)] for i in idx], al_ds, idx
    )
    key = _save_selection(ctx, alignment_indices=idx, finetune_indices=ft_idx, a_max=a_max.astype(np.float32))
    return StageOutput(
        artefact_key=key,
        result={
            "selection": a["selection"],
            "size": int(idx.size),
            "alignment_examples": len(al),
            "finetune_examples": int(ft_idx.size),
            "subset_mean_max_sim": round(float(a_max[idx].mean()), 5),
            "pool_mean_max_sim": round(float(a_max.mean()), 5),
            "representation": representer.describe() | {"identity": representer.identity},
            "features": feats,
            "seconds": round(time.perf_counter() - t0, 2),
        },
    )


def _screening_features(
    ctx: StageContext,
    customer: list[Example],
    customer_sha: str,
    subset: list[Example],
    al_ds: Dataset,
    idx: np.ndarray,
) -> dict[str, Any] | None:
    """What a screening of the customer data against the selected subset reports
    (`workers.screenings.screening.screen` itself, with a screening's defaults: anchors on), so the
    calibration fitted on experiments applies to screenings as they are run. The vector cache (per example)
    makes the second look free."""
    if len(subset) < 2:
        return None  # no reference levels inside a one-example set
    rt, rep = ctx.runtime, ctx.params["alignment"]["representation"]
    params = screening_params.with_defaults({**rep, "seed": ctx.params["alignment"]["seed"]}, rt.settings)
    anchor_rep = rt.representer(screening_params.anchor_representation(params, rt.settings))
    sub_sha = f"{al_ds.sha256}-subset-{hashlib.sha256(idx.tobytes()).hexdigest()[:16]}"

    def report(t: Tick) -> bool:  # the last tenth of the stage; ctx.progress raises when cancelled
        ctx.progress(0.9 + 0.1 * t.fraction, message=t.message)
        return True

    out = screen(
        report=report,
        customer=Side("customer", customer, customer_sha),
        alignment=Side("alignment", subset, sub_sha),
        representer=rt.representer(params),
        params=Params.from_dict(params),
        cache=rt.cache_for(ctx.experiment.tenant_id),
        device=rt.device,
        anchors=bundled_anchors(
            rt.settings,
            anchor_rep,
            rt.shared_cache(),
            semantic=rt.representer(
                {"backend": rt.settings.default_backend, "model": rt.settings.default_model}
            ),
        ),
    )
    r, d = out.body["risk"], out.body["distributions"]["customer_max_sim"]
    return {
        "risk_score": r["risk_score"],
        "tier": r["tier"],
        "parts": {p["name"]: p["value"] for p in r["parts"]},
        "reference_levels": r["reference_levels"],
        "anchors": "harmful_anchor_margin" in {p["name"] for p in r["parts"]},
        "customer_max_sim": {
            "mean": d["mean"],
            "p50": d["percentiles"]["p50"],
            "p90": d["percentiles"]["p90"],
        },
    }


# ---------------------------------------------------------------------------------------------- train


def aligned_adapters(ctx: StageContext, tmp: Path) -> list[tuple[str, Path]]:
    """The adapters that make the aligned model: the alignment stage's, when it left one."""
    align = ctx.previous.get("align", (None, {}))
    if align[0] is None:
        return []  # fine-tune-only from a base model that is already aligned
    return [(align[1]["method"], extract_dir(ctx.store, align[0], tmp / "align"))]


def base_model(ctx: StageContext, adapters: list[tuple[str, Path]], dtype: str) -> tuple[Any, Any]:
    """The experiment's base model (and tokenizer) on the worker's device, with `adapters` applied."""
    rt = ctx.runtime
    return load_model(
        registry.path(rt.settings, ctx.params["base_model"]),
        adapters=adapters,
        device=rt.device,
        dtype=dtype,
        data_dir=rt.settings.data_dir,
    )


def _train_stage(
    ctx: StageContext,
    conversations: list[list[dict[str, str]]],
    cfg: TrainConfig,
    *,
    after_alignment: bool,
    checkpoints: Sequence[float] = (),
) -> StageOutput:
    rt = ctx.runtime
    dtype, _ = resolve_precision(cfg.precision, rt.device, cfg.method)
    with tempfile.TemporaryDirectory(dir=ctx.store.staging(), prefix="exp-") as tmp:
        adapters = aligned_adapters(ctx, Path(tmp)) if after_alignment else []
        ctx.progress(0.0, message=f"loading {ctx.params['base_model']} ({dtype}) on {rt.device}")
        model, tokenizer = base_model(ctx, adapters, dtype)
        ctx.progress(
            0.0, message=f"training on {len(conversations)} examples ({cfg.method}, {cfg.epochs} epoch(s))"
        )
        last: dict[str, Any] = {}
        saved: dict[str, str] = {}

        def on_step(d: dict[str, Any]) -> None:
            last.update(d)
            ctx.progress(d["step"] / d["total_steps"], detail=d)

        def on_checkpoint(frac: float, trained: Any) -> None:
            folder = Path(tmp) / f"ckpt-{frac:.4f}"
            save_model(trained, tokenizer, cfg.method, folder)
            saved[f"{frac:.4f}"] = ctx.put_dir(f"model-ckpt-{frac:.4f}.tar", folder)
            shutil.rmtree(folder, ignore_errors=True)

        model, stats = train(
            model,
            tokenizer,
            conversations,
            cfg,
            on_step=on_step,
            checkpoints=checkpoints,
            on_checkpoint=on_checkpoint,
        )
        ctx.progress(
            1.0, detail=last, message=f"trained: loss {stats['first_loss']} -> {stats['final_loss']}"
        )
        out = Path(tmp) / "out"
        save_model(model, tokenizer, cfg.method, out)
        key = ctx.put_dir("model.tar", out)
        release(model)
    if saved:
        stats["checkpoints"] = saved
    return StageOutput(artefact_key=key, result=stats)


def align_stage(ctx: StageContext) -> StageOutput:
    if ctx.params.get("alignment") is None:
        return _start_aligned(ctx)
    al = _examples(ctx, _dataset(ctx, "alignment"))
    idx = _selection(ctx)["alignment_indices"]
    cfg = TrainConfig.from_dict(ctx.params["alignment_training"])
    return _train_stage(ctx, [al[int(i)].messages for i in idx], cfg, after_alignment=False)


def _start_aligned(ctx: StageContext) -> StageOutput:
    """Fine-tune-only: no training. From an earlier experiment, its aligned model is copied in (so deleting
    that experiment cannot break this one); from an aligned base model, nothing is left."""
    src = ctx.params.get("aligned_from")
    if not src:
        return StageOutput(result={"method": "none", "skipped": True, "start": ctx.params["base_model"]})
    if not ctx.store.exists(src["artefact_key"]):
        raise FtguardError(
            f"the aligned model of {src['experiment_id']} is gone (was the experiment deleted?)",
            code="aligned_model_missing",
        )
    key = ctx.key("model.tar")
    with ctx.store.open(src["artefact_key"]) as fh:
        copy_to(ctx.store, key, fh)
    return StageOutput(
        artefact_key=key,
        result={"method": src["method"], "skipped": True, "aligned_from": src["experiment_id"]},
    )


def finetune_stage(ctx: StageContext) -> StageOutput:
    ft = _examples(ctx, _dataset(ctx, "fine_tune"))
    idx = _selection(ctx)["finetune_indices"]
    cfg = TrainConfig.from_dict(ctx.params["training"])
    return _train_stage(
        ctx,
        [ft[int(i)].messages for i in idx],
        cfg,
        after_alignment=True,
        checkpoints=checkpoints(ctx),
    )


def checkpoints(ctx: StageContext) -> list[float]:
    return [float(c) for c in (ctx.params.get("evaluation") or {}).get("checkpoints", [1.0])]
