"""A small model of how IAM evaluates the Deny statements our bucket policy emits (ours, not AWS's evaluator).

Modelled from the IAM User Guide, "IAM JSON policy elements: Condition operators"
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html): a condition
block is the AND of its operators and keys, a list of values is OR; the ...Not... operators (StringNotEquals,
StringNotLike, ArnNotLike) match when the key is absent from the request; Null tests presence; ForAnyValue: matches
when any value of a multivalued request key matches. A statement without a Condition applies to every request its
Action and Resource match. Only the operators our policy uses are modelled: any other one fails the test.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any


def _like(actual: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(actual, p) for p in patterns)


def _match(op: str, actual: Any, wanted: Any) -> bool:
    values = wanted if isinstance(wanted, list) else [wanted]
    if op == "Null":
        return (actual is None) == (str(wanted).lower() == "true")
    if op == "Bool":
        return actual is not None and str(actual).lower() == str(wanted).lower()
    if op == "StringEquals":
        return actual is not None and actual in values
    if op == "StringNotEquals":
        return actual is None or actual not in values
    if op == "StringNotLike":
        return actual is None or not _like(actual, values)
    if op == "ArnNotLike":
        return actual is None or not _like(actual, values)
    if op == "ForAnyValue:StringLike":
        return actual is not None and any(_like(a, values) for a in actual)
    raise AssertionError(f"operator {op} not modelled")


def denied_by(policy: str, action: str, resource: str, context: dict[str, Any]) -> list[str]:
    """The Sids of the statements that deny ``action`` on ``resource`` with these request context keys."""
    out = []
    for st in json.loads(policy)["Statement"]:
        assert st["Effect"] == "Deny" and st["Principal"] == "*", st["Sid"]
        if not _like(action, st["Action"]) and not any(fnmatch.fnmatchcase(action, a) for a in st["Action"]):
            continue
        if not _like(resource, st["Resource"]):
            continue
        cond = st.get("Condition", {})
        if all(_match(op, context.get(k), v) for op, kv in cond.items() for k, v in kv.items()):
            out.append(st["Sid"])
    return out
