"""Whether concurrent counter answers fit some one-at-a-time order: an Eulerian path check.

Each applied change `by` that answered `value` moved the counter from `value - by` to
`value`: an edge between two values. A one-at-a-time execution from `start` is a walk that
uses every edge once, so the answers fit such an execution exactly when the edges form an
Eulerian path from `start`: every value is entered as often as it is left, except `start`
(left once more) and the final value (entered once more), and every edge is reachable.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable


def serial_order_exists(start: int, answers: Iterable[tuple[int, int]]) -> bool:
    """True when the `(by, value)` answers fit a one-at-a-time execution from `start`."""
    edges = [(value - by, value) for by, value in answers]
    if not edges:
        return True
    balance: Counter[int] = Counter()
    graph: dict[int, list[int]] = defaultdict(list)
    for low, high in edges:
        balance[low] += 1
        balance[high] -= 1
        graph[low].append(high)
        graph[high].append(low)  # weak connectivity is enough once degrees balance
    ends = {node: surplus for node, surplus in balance.items() if surplus}
    if ends and (len(ends) != 2 or ends.get(start) != 1):
        return False
    if not ends and balance[start] != 0:
        return False
    if start not in graph:
        return False
    seen = {start}
    stack = [start]
    while stack:
        for other in graph[stack.pop()]:
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return seen >= set(graph)
