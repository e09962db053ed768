"""recforge for Python: the CPU inference crate (recforge-infer) as a
native module, with the same bundle checks and the same answers as
``recforge submit`` and the HTTP server.

    import recforge
    r = recforge.load("models/RANKING")          # a model or a ranking bundle
    r.recommend(["0108775015", ("0110065001", 3.0)], {"age": "31"}, k=12)
    for customer_id, history, attributes in recforge.read_customers(
            "serving/customers.jsonl", r.day):
        ...

Errors are :class:`RecforgeError` (a ``ValueError``) with recforge's own
message.
"""

from __future__ import annotations

import datetime
import json
from typing import Dict, Iterator, List, Tuple

from ._recforge import RecforgeError, Recommender, shard_of

__all__ = [
    "RecforgeError",
    "Recommender",
    "load",
    "read_customers",
    "shard_of",
    "day_number",
]

_EPOCH = datetime.date(1970, 1, 1).toordinal()


def load(path: str) -> Recommender:
    """Loads a bundle directory (``models/NAME``): a model bundle or a
    ranking bundle, checked as ``recforge submit`` and the server check it."""
    return Recommender.load(path)


def day_number(date: str) -> int:
    """``YYYY-MM-DD`` as days since 1970-01-01 (recforge's day numbers)."""
    try:
        return datetime.date.fromisoformat(date).toordinal() - _EPOCH
    except ValueError as e:
        raise RecforgeError(f"date `{date}`: use YYYY-MM-DD") from e


Entry = Tuple[str, float, object]


def read_customers(
    path: str, day: int
) -> Iterator[Tuple[str, List[Entry], Dict[str, str]]]:
    """The customers file ``recforge serving-data`` writes (JSON lines),
    as (customer id, history, attributes) with each purchase's age counted
    back from ``day`` (a bundle's ``day``). Purchases dated on or after the
    day are left out, as ``recforge submit`` and the Spark job leave them
    out when they serve as of a day: nothing from the day served on reaches
    a feature (a file written for a later day serves correctly)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                c = json.loads(line)
                history = []
                for h in c.get("history", []):
                    if "date" in h and h["date"] is not None:
                        ago = day - day_number(h["date"])
                    else:
                        ago = float(h.get("days_ago", 0.0))
                    # Dated or counted back, the served day and later stay out.
                    if ago <= 0:
                        continue
                    history.append((h["article_id"], float(ago), h.get("channel")))
                yield c["customer_id"], history, c.get("attributes", {})
            except (KeyError, TypeError, ValueError) as e:
                raise RecforgeError(f"{path}: line {n}: {e}") from e
