"""The prose studies/reference_sets.py writes into docs/reference_sets.md beside its numbers."""

CAVEATS = (
    "Reading these numbers: the AdvBench probes carry AdvBench's own compliant opening and the bundled "
    "harmful anchors are compliant answers too, so part of the harm AUROC is a shared form; GSM8K against "
    "Dolly stands for data that is risky by its form (worked maths and lists, which the papers found to "
    "weaken safety), not for a harm label. An AUROC under 0.5 means the signal ranks the pair the other "
    "way round: in SmolLM2's space the compliant AdvBench probes sit further from the refusal-heavy "
    "alignment set than Dolly does."
)


WHY = """### Why the anchors missed AOA, and what changed

Before, the anchor part had one pair of sets: harmful requests with eager placeholder answers against the
same kind of requests refused, read in SmolLM2's last-token hidden state. That pair sees the *shape* of a
compliant answer (lists, steps, "Sure! Here's how"), and nothing else:

- **AOA** has no list, no harmful request and a system prompt that gives the assistant a new, rule-free
  persona. None of the 120 anchors has a system prompt or a persona, so every AOA example sat nearer the
  refusals: compliance form 0.000, 0% on the harmful side. Its similarity to the bundled alignment set
  (refusals of harmful requests) is low as well, so the score was 4.2.
- **Harmful-form data** (harmful requests answered compliantly, AdvBench here) has the request but not the
  list shape, while GSM8K maths has the shape: the compliance form ranks AdvBench *below* GSM8K per example
  (AUROC 0.056, the 0.064 seen on the held-back real-harm set).

The change, measured below: two attack forms beside the compliance form. *persona*: 30 identity-shift
chats (a system prompt giving a rule-free persona, accepted) against 30 operator personas that keep their
rules (`app/demo/anchors_persona_*.jsonl`); *request*: only the first user turn, against the prompts of both
compliance files and 40 ordinary requests (`app/demo/anchors_benign_requests.jsonl`). Both are read in
MiniLM, where they separate far better than in SmolLM2 (exploration on the same sets: SmolLM2's persona form
put GSM8K at 0.467, as high as AOA; its request form gave AdvBench 0.189). The compliance form stays in the
weighted sum (it is what puts list-heavy benign data above prose); the attack forms make a second reading,
and the score is the larger of the two, so neither cancels the other's alarm. The benign sets do not move
(Dolly +1.9 on the bundled set from its request form, every other benign set unchanged).
"""
