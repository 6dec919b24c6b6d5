"""Which document of several a question is about, from the words it names.

In an index of two plays, "Who tries to seduce Christy?" names a character only one of them
has; without routing, a third of the passages came from the other play and its people got
into answers ("Who tried to seduce Christy?" answered with a name from the other script).
A question is routed to one document when that document holds every question term the
index holds at all, and those terms weigh clearly more there than in any other document.
A question is also routed by a name: a term that only one document holds, and holds
throughout (in a tenth of its chunks or more), is a character of that play or the subject
of that article ("Christy", "Pegeen"; "Beyoncé"). The idf weighs such a term lightly (it is
in most of its document's chunks), so the weight rule misses "Who falls in love with
Christy?"; when all the names a question holds are one document's, it is routed there.
Pure: works on terms, weights, chunk counts and source ids."""

from __future__ import annotations

from collections.abc import Mapping, Set

# A term one document holds in at least this share of its chunks, and in at least
# NAME_MIN_CHUNKS of them, while no other document holds it, is one of its names.
NAME_SHARE = 0.1
NAME_MIN_CHUNKS = 3

# The routed document must hold this much more of the question's idf weight than the next
# one. Measured on the public sets (docs/retrieval.md, "Routing"): with the "holds every
# term" rule alone it routed 3 of 120 qa-public questions to the wrong article (the gold
# one lacked a common word: "make", "along"); at 0.2 it routed 101 of 200 qa-public, 28 of
# 57 plays-public and 23 of 120 ja-public questions, every one to its own document.
ROUTE_MARGIN = 0.2


def route(
    weights: Mapping[str, float], holders: Mapping[str, Set[int]], margin: float = ROUTE_MARGIN
) -> int | None:
    """The source a question is about, or None when the words don't single one out.

    `weights`: the question's content terms with their idf; `holders`: for each term, the
    sources that hold it (a term no source holds is ignored: misspelt, or not there);
    `margin`: how much more of the question's weight the source must hold than any other."""
    found = [t for t in weights if holders.get(t)]
    total = sum(weights.values())
    if not found or total <= 0:
        return None
    everywhere = set.intersection(*(set(holders[t]) for t in found))
    if len(everywhere) != 1:
        return None
    (source,) = everywhere
    others = set().union(*(holders[t] for t in found)) - {source}
    own = sum(weights[t] for t in found) / total
    runner_up = max(
        (sum(weights[t] for t in found if other in holders[t]) / total for other in others),
        default=0.0,
    )
    return source if own - runner_up >= margin else None


def named_source(counts: Mapping[str, Mapping[int, int]], sizes: Mapping[int, int]) -> int | None:
    """The document that all the question's names belong to, or None (no name, or names of
    two documents). `counts`: for each question term, its chunk count per source that holds
    it; `sizes`: each source's chunk count."""
    named = set()
    for per_source in counts.values():
        if len(per_source) != 1:
            continue
        ((source, count),) = per_source.items()
        if count >= max(NAME_MIN_CHUNKS, NAME_SHARE * sizes.get(source, 0)):
            named.add(source)
    return named.pop() if len(named) == 1 else None
