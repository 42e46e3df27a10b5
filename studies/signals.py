"""A screening as the service runs it, for studies: records in, the report's risk and every part out, and the
per-example score that ranks examples. The same code path as a screening job
(`workers.screenings.screening.screen`, the settings' default models and the bundled anchors)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class Screener:
    def __init__(self, settings: Any, *, tenant_id: str = "study") -> None:
        from app.core.services import build_services
        from app.screenings.params import anchor_representation, with_defaults
        from workers.runtime import Runtime
        from workers.screenings.screening import bundled_anchors

        self.settings = settings
        self.runtime = Runtime(settings, services=build_services(settings))
        self.params = with_defaults({}, settings)
        self.rep = self.runtime.representer(self.params)
        anchor_rep = self.runtime.representer(anchor_representation(self.params, settings))
        self.anchors = bundled_anchors(settings, anchor_rep, self.runtime.shared_cache(), semantic=self.rep)
        self.cache = self.runtime.cache_for(tenant_id)
        self._tmp = Path(tempfile.mkdtemp(prefix="ftguard-signals-"))

    def _side(self, rows: list[dict[str, Any]], name: str) -> Any:
        from workers.screenings.screening import side_from_file

        path = self._tmp / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return side_from_file(path, name, self.settings)

    def _outcome(self, rows: list[dict[str, Any]], align: list[dict[str, Any]]) -> Any:
        from workers.screenings.screening import Params, screen

        return screen(
            customer=self._side(rows, "customer"),
            alignment=self._side(align, "alignment"),
            representer=self.rep,
            params=Params.from_dict(self.params),
            cache=self.cache,
            device=self.runtime.device,
            anchors=self.anchors,
        )

    def screen(self, rows: list[dict[str, Any]], align: list[dict[str, Any]]) -> dict[str, Any]:
        """The report's risk score, tier and parts, the anchor share, and the candidate signals
        (`candidates`) that no report shows yet, for the study to test against harm."""
        out = self._outcome(rows, align)
        body = out.body
        r = body["risk"]
        return {
            "candidates": self.candidates(rows, out),
            "risk_score": r["risk_score"],
            "tier": r["tier"],
            "parts": {p["name"]: p["value"] for p in r["parts"]},
            "weights": {p["name"]: p["weight"] for p in r["parts"]},
            "formula": r["formula"],
            "share_closer_to_harmful": (body.get("anchors") or {}).get("share_closer_to_harmful"),
            "examples": body["customer"]["examples"],
        }

    def candidates(self, rows: list[dict[str, Any]], out: Any) -> dict[str, float]:
        """Signals the study tests before any report uses them.

        * `refusal_share`: the share of examples whose (last) answer the keyword judge reads as a refusal.
        * `risk_refusals_excluded`: the default risk formula with those examples counted as neither similar
          to the alignment data nor close to any harmful anchor: fine-tuning on a refusal teaches refusal
          (the held-out safety data left the least harm of any set in the first study), so only the
          examples that answer count toward the erosion the score estimates.
        """
        from workers.experiments.judges import is_refusal
        from workers.screenings import risk

        answers = [[m for m in r["messages"] if m["role"] == "assistant"][-1]["content"] for r in rows]
        refuses = np.array([is_refusal(a)[0] for a in answers], dtype=bool)
        c_max = np.where(refuses, -1.0, out.arrays["c_max"].astype(np.float64))
        zh = {
            k[len("c_anchor_zh_") :]: np.where(refuses, 0.0, v.astype(np.float64))
            for k, v in out.arrays.items()
            if k.startswith("c_anchor_zh_")
        }
        masked = risk.score(c_max, out.body["risk"]["reference_levels"], zh or None)
        return {
            "refusal_share": round(float(refuses.mean()), 4),
            "risk_refusals_excluded": masked["risk_score"],
        }

    def rank_examples(self, rows: list[dict[str, Any]], align: list[dict[str, Any]]) -> list[int]:
        """Indices of `rows`, riskiest first, by ftguard's per-example score: the risk formula applied to
        each example alone (its rescaled similarity and its rescaled margin in every anchor form)."""
        from workers.screenings import risk

        out = self._outcome(rows, align)
        r = out.body["risk"]
        c_max = out.arrays["c_max"]
        zh = {k[len("c_anchor_zh_") :]: v for k, v in out.arrays.items() if k.startswith("c_anchor_zh_")}
        per = np.array(
            [
                risk.score(
                    c_max[i : i + 1], r["reference_levels"], {k: v[i : i + 1] for k, v in zh.items()} or None
                )["risk_score"]
                for i in range(len(c_max))
            ]
        )
        return [int(i) for i in np.argsort(-per, kind="stable")]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.params["backend"],
            "model": self.params["model"],
            "anchor_backend": self.params["anchor_backend"],
            "anchor_model": self.params["anchor_model"],
            "anchor_layer": self.params["anchor_layer"],
            "anchor_dtype": self.anchors.representer.describe().get("dtype"),
            "anchors": "bundled",
            "code": self.fingerprint(),
        }

    def fingerprint(self) -> str:
        """What a screening's numbers depend on besides its inputs and models: the source of the screening
        code (workers/ and workers/screenings/ but their job plumbing, the representation backends, this file)
        and the bundled anchor
        sets. A study
        keeps its recorded signals only while this is unchanged, so a changed signal is always re-screened."""
        import hashlib

        root = Path(__file__).resolve().parents[1]
        # job bookkeeping: no number depends on it (the shards' exactness tests hold sharded = unsharded)
        plumbing = {"jobs.py", "runner.py", "progress.py", "heartbeat.py", "shards.py"}
        code = [*(root / "workers").glob("*.py")]
        code += [
            *(root / "workers" / "screenings").glob("*.py"),
            *(root / "workers" / "representations").glob("*.py"),
        ]
        files = [*sorted(f for f in code if f.name not in plumbing), Path(__file__).resolve()]
        h = hashlib.sha256()
        for f in files:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
        for form in self.anchors.forms:
            h.update(f"{form.name}:{form.harmful.sha256}:{form.safe.sha256}:{form.view}".encode())
        return h.hexdigest()[:16]
