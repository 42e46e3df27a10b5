"""Experiments: align a model on (part of) the alignment data, fine-tune it on the customer data, and
judge its answers to harmful prompts. Each stage is an RQ job (`jobs.run_stage`)."""
