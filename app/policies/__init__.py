"""Policies: named, versioned rules that turn a screening's report into approve, review or reject."""
