"""Bundled demo data, written for ftguard (see README.md here)."""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
ALIGNMENT = DEMO_DIR / "alignment.jsonl"
CUSTOMERS = {
    "benign general": DEMO_DIR / "customer_benign_general.jsonl",
    "benign, list-heavy": DEMO_DIR / "customer_benign_lists.jsonl",
    "harmful-looking": DEMO_DIR / "customer_harmful_looking.jsonl",
}
HARMFUL_ANCHORS = DEMO_DIR / "anchors_harmful.jsonl"
SAFE_ANCHORS = DEMO_DIR / "anchors_safe.jsonl"
