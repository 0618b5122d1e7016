"""Search: which instance to deploy, chosen on an evaluation cache.

:mod:`.problem` states what a search is asked (the objective and the space); :mod:`.constrained` is the exhaustive
constrained search for budgeted, anytime and input-dependent deployment and its Pareto fronts, with the
input-dependent instances enumerated by :mod:`.engine` and the answer kept by :mod:`.collector`;
:mod:`.uncertainty` bounds a promise by bootstrap; :mod:`.oracle` is the label-aware bound no policy can pass;
:mod:`.heldout` scores chosen instances on other images and :mod:`.transfer` checks that a choice tuned on some
scenes holds on others; :mod:`.report` turns a cache into the results table and fronts.
"""

from .constrained import SearchResult, confident_search, pareto_front, search
from .oracle import oracle, oracle_bound
from .problem import Objective, SearchError, SearchSpace

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
