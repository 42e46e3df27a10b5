"""Bundled demo data, written for ftguard (see README.md here)."""

from pathlib import Path
from typing import Any

DEMO_DIR = Path(__file__).resolve().parent
ALIGNMENT = DEMO_DIR / "alignment.jsonl"
CUSTOMERS = {
    "benign general": DEMO_DIR / "customer_benign_general.jsonl",
    "benign, list-heavy": DEMO_DIR / "customer_benign_lists.jsonl",
    "harmful-looking": DEMO_DIR / "customer_harmful_looking.jsonl",
}
HARMFUL_ANCHORS = DEMO_DIR / "anchors_harmful.jsonl"
SAFE_ANCHORS = DEMO_DIR / "anchors_safe.jsonl"
PERSONA_HARMFUL_ANCHORS = DEMO_DIR / "anchors_persona_harmful.jsonl"
PERSONA_SAFE_ANCHORS = DEMO_DIR / "anchors_persona_safe.jsonl"
BENIGN_REQUEST_ANCHORS = DEMO_DIR / "anchors_benign_requests.jsonl"
EVAL_PROMPTS = DEMO_DIR / "eval_prompts.jsonl"  # an experiment's judged prompts when it names none
# The bundled anchor forms (workers.screenings.anchors): a harmful and a safe side each, the view of an
# example that is read ("whole" or "request": the first user turn) and the space it is read in ("anchor": the
# anchor model, SmolLM2 by default; "semantic": the sentence embedder). docs/reference_sets.md measured these
# choices.
ANCHOR_FORMS: dict[str, dict[str, Any]] = {
    "compliance": {
        "harmful": (HARMFUL_ANCHORS,),
        "safe": (SAFE_ANCHORS,),
        "view": "whole",
        "space": "anchor",
    },
    "persona": {
        "harmful": (PERSONA_HARMFUL_ANCHORS,),
        "safe": (PERSONA_SAFE_ANCHORS,),
        "view": "whole",
        "space": "semantic",
    },
    "request": {
        "harmful": (HARMFUL_ANCHORS, SAFE_ANCHORS),
        "safe": (BENIGN_REQUEST_ANCHORS,),
        "view": "request",
        "space": "semantic",
    },
}
