"""Search: which instance to deploy, chosen on an evaluation cache.

:mod:`.constrained` is the exhaustive constrained search for budgeted, anytime and input-dependent deployment and
its Pareto fronts; :mod:`.uncertainty` bounds a promise by bootstrap; :mod:`.oracle` is the label-aware bound no
policy can pass; :mod:`.heldout` scores chosen instances on other images and :mod:`.transfer` checks that a choice
tuned on some scenes holds on others; :mod:`.report` turns a cache into the results table and fronts.
"""

from .constrained import Objective, SearchError, SearchResult, SearchSpace, confident_search, pareto_front, search
from .oracle import oracle, oracle_bound

__all__ = [
    "search",
    "confident_search",
    "pareto_front",
    "Objective",
    "SearchSpace",
    "SearchResult",
    "SearchError",
    "oracle",
    "oracle_bound",
]
