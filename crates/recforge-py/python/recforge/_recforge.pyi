"""Typed stubs of the native module (crates/recforge-py/src/lib.rs)."""

from os import PathLike
from typing import Dict, List, Optional, Sequence, Tuple, Union

# A past purchase: an article id (bought on the day served), or
# (id, days ago), or (id, days ago, sales channel or None).
Purchase = Union[str, Tuple[str, float], Tuple[str, float, Optional[int]]]
# (article id, score), best first; score None where unscored.
Ranked = List[Tuple[str, Optional[float]]]

class RecforgeError(ValueError):
    """A bundle that fails its checks, or a request it cannot answer."""

class Recommender:
    """A loaded bundle and its live item pool."""

    @staticmethod
    def load(path: Union[str, PathLike]) -> "Recommender": ...
    @property
    def kind(self) -> str:
        """"sasrec", "two-tower" or "ranking"."""
    @property
    def version(self) -> str: ...
    @property
    def day(self) -> int:
        """The day served (days since 1970-01-01); ages count back from it."""
    def pool_size(self) -> Tuple[int, int]:
        """(articles in the pool, articles sold now)."""
    def recommend(
        self,
        history: Sequence[Purchase],
        attributes: Optional[Dict[str, str]] = None,
        k: int = 12,
        exclude: Optional[Sequence[str]] = None,
        exclude_purchased: bool = False,
    ) -> Ranked: ...
    def recommend_batch(
        self,
        histories: Sequence[Sequence[Purchase]],
        attributes: Optional[Sequence[Dict[str, str]]] = None,
        k: int = 12,
        exclude_purchased: bool = False,
    ) -> List[Ranked]:
        """recommend() for many customers, on every core, without the GIL."""
    def add_items(self, items: Sequence[Tuple[str, Dict[str, str]]]) -> int:
        """Adds (article id, raw attributes) to the pool; returns its size."""
    def set_available(
        self,
        sold_out: Optional[Sequence[str]] = None,
        in_stock: Optional[Sequence[str]] = None,
    ) -> None: ...
    def item_vector(self, article: str) -> Optional[List[float]]: ...
    def customer_vector(
        self, history: Sequence[Purchase], attributes: Optional[Dict[str, str]] = None
    ) -> Optional[List[float]]: ...

def shard_of(customer_id: str, shards: int) -> int:
    """The shard `recforge submit --shard I/N` puts a customer in."""
