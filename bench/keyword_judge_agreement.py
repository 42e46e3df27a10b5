"""How well the keyword judge agrees with people, on the human-labelled sets that ship in PyRIT (MIT).

* refusal: pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv and refusal_extra.csv, each row an
  assistant answer with a human label "is this a refusal" (1/0). The keyword judge's `refused` is compared
  with it.
* harm: pyrit/datasets/scorer_evals/objective/*.csv, each row an answer to a harmful objective with a
  human label "did the answer achieve the objective". The keyword judge's `harmful` (= not refused) is
  compared with it: an upper bound by design, so its precision here is the number to read.

Baselines, measured in the same run: the majority class, and a one-phrase check (the answer starts with
"sorry" or "i'm sorry"). Agreement is accuracy, precision, recall, F1 and Cohen's kappa.

PyRIT itself (and its 40-odd dependencies) is not needed, only its wheel's data files:

    pip download pyrit==1.1.0 --no-deps -d /tmp/pyrit        # once; 10 MB
    python bench/keyword_judge_agreement.py --wheel /tmp/pyrit/pyrit-1.1.0-py3-none-any.whl

(or, where pyrit is installed, no argument: the files are read from the installed package).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import sys
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.experiments.judges import REFUSAL_PHRASES, is_refusal  # noqa: E402

PREFIX = "pyrit/datasets/scorer_evals/"


def _files(wheel: Path | None) -> Iterator[tuple[str, str]]:
    """(path under scorer_evals/, text) of every CSV, from the wheel or the installed package."""
    if wheel is not None:
        with zipfile.ZipFile(wheel) as zf:
            for name in sorted(zf.namelist()):
                if name.startswith(PREFIX) and name.endswith(".csv"):
                    yield name[len(PREFIX) :], zf.read(name).decode("utf-8")
        return
    spec = importlib.util.find_spec("pyrit")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pyrit is not installed: pass --wheel (see this file's docstring)")
    base = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "scorer_evals"
    for path in sorted(base.rglob("*.csv")):
        yield path.relative_to(base).as_posix(), path.read_text(encoding="utf-8")


def _rows(text: str) -> list[dict[str, str]]:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return [r for r in csv.DictReader(io.StringIO(body)) if r.get("human_score") in ("0", "1")]


def agreement(pred: list[bool], truth: list[bool]) -> dict[str, float]:
    tp = sum(p and t for p, t in zip(pred, truth, strict=True))
    tn = sum(not p and not t for p, t in zip(pred, truth, strict=True))
    fp = sum(p and not t for p, t in zip(pred, truth, strict=True))
    fn = sum(not p and t for p, t in zip(pred, truth, strict=True))
    n = len(pred)
    acc = (tp + tn) / n
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n)
    kappa = (acc - chance) / (1 - chance) if chance < 1 else 0.0
    return {"n": n, "accuracy": acc, "precision": prec, "recall": rec, "f1": f1, "kappa": kappa,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}  # fmt: skip


def _line(name: str, m: dict[str, float]) -> str:
    return (
        f"| {name} | {m['n']} | {m['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
        f"{m['f1']:.3f} | {m['kappa']:.3f} | {m['tp']}/{m['fp']}/{m['fn']}/{m['tn']} |"
    )


HEADER = (
    "| judge | n | accuracy | precision | recall | F1 | Cohen's kappa | TP/FP/FN/TN |\n"
    "|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, default=None)
    args = ap.parse_args()
    refusal: list[dict[str, str]] = []
    harm: dict[str, list[dict[str, str]]] = defaultdict(list)
    for name, text in _files(args.wheel):
        if name.startswith("refusal_scorer/"):
            refusal += _rows(text)
        elif name.startswith("objective/"):
            harm[name.removeprefix("objective/").removesuffix(".csv")] += _rows(text)

    def sorry(r: str) -> bool:
        return r.strip().lower().replace("\u2019", "'").startswith(("sorry", "i'm sorry"))

    judges: dict[str, Callable[[str], bool]] = {
        "keyword (ftguard)": lambda r: is_refusal(r)[0],
        "baseline: starts with 'sorry'": sorry,
    }
    print(f"keyword judge: {len(REFUSAL_PHRASES)} phrases, matched in the first 240 characters\n")
    print(f"## Refusal: {len(refusal)} human-labelled answers (refusal_scorer/refusal*.csv)\n")
    print(HEADER)
    truth = [r["human_score"] == "1" for r in refusal]
    for name, fn in judges.items():
        print(_line(name, agreement([fn(r["assistant_response"]) for r in refusal], truth)))
    majority = sum(truth) >= len(truth) / 2
    print(
        _line(
            f"baseline: always {'refusal' if majority else 'no refusal'}",
            agreement([majority] * len(truth), truth),
        )
    )

    rows = [r for v in harm.values() for r in v]
    print(
        f"\n## Harm: {len(rows)} answers to harmful objectives, "
        "human label 'objective achieved' (objective/*.csv)\n"
    )
    print("The keyword judge calls an answer harmful when it does not refuse.\n")
    print(HEADER)
    truth = [r["human_score"] == "1" for r in rows]
    for name, fn in judges.items():
        print(_line(name, agreement([not fn(r["assistant_response"]) for r in rows], truth)))
    majority = sum(truth) >= len(truth) / 2
    print(
        _line(
            f"baseline: always {'harmful' if majority else 'harmless'}",
            agreement([majority] * len(truth), truth),
        )
    )
    print("\n### Keyword judge per harm category\n")
    print(HEADER)
    for cat, cat_rows in sorted(harm.items()):
        if len(cat_rows) >= 10:
            t = [r["human_score"] == "1" for r in cat_rows]
            print(_line(cat, agreement([not is_refusal(r["assistant_response"])[0] for r in cat_rows], t)))


if __name__ == "__main__":
    main()
