"""Where a call goes after a turn: a stage's transitions, chosen by the agent's outcome and by
values in its structured answer, and the checks that make a flow's graph safe to run (every
stage reachable, every target real, no loop that could turn forever).

A stage without transitions behaves as DESIGN §3 says: completed → the next stage (after the
last, the call is complete); failed or input-required → the call stays. Transitions come first,
in order; the first whose outcome and conditions match decides; when none matches, that default
applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["completed", "failed", "input_required"]
OUTCOMES: tuple[Outcome, ...] = ("completed", "failed", "input_required")
# Targets that are not stages: the call is complete, or handed to a person.
END = "END"
ESCALATION = "ESCALATION"
TERMINALS = frozenset({END, ESCALATION})
Scalar = str | int | float | bool | None
_ABSENT = object()


@dataclass(frozen=True)
class Condition:
    """One test of a value in the agent's structured answer (`data`), found by a dotted path:
    equal to a value, one of several, or present at all."""

    path: tuple[str, ...]
    equals: Scalar = None
    one_of: tuple[Scalar, ...] | None = None
    exists: bool | None = None

    def holds(self, data: Mapping[str, Any]) -> bool:
        value: Any = data
        for key in self.path:
            value = value.get(key, _ABSENT) if isinstance(value, Mapping) else _ABSENT
        if self.exists is not None:
            return (value is not _ABSENT) is self.exists
        if value is _ABSENT:
            return False
        if self.one_of is not None:
            return any(_same(value, wanted) for wanted in self.one_of)
        return _same(value, self.equals)


def _same(value: Any, wanted: Scalar) -> bool:
    """Equal and of the same kind: `true` is not `1`, and `"1"` is not `1`."""
    if isinstance(wanted, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(wanted, bool) and value is wanted
    if isinstance(wanted, int | float) and isinstance(value, int | float):
        return value == wanted
    return type(value) is type(wanted) and bool(value == wanted)


@dataclass(frozen=True)
class Transition:
    """`on` an outcome, `when` every condition holds, go `to` a stage (by name), END or
    ESCALATION (with `queue`, if given, as the handoff's queue)."""

    on: Outcome
    to: str
    when: tuple[Condition, ...] = ()
    queue: str | None = None

    def matches(self, outcome: Outcome, data: Mapping[str, Any]) -> bool:
        return outcome == self.on and all(condition.holds(data) for condition in self.when)


def target(transitions: Sequence[Transition], outcome: Outcome, data: Mapping[str, Any],
           next_stage: str) -> Transition | None:
    """Where a stage's turn goes: the first matching transition; else the default (completed:
    `next_stage`, which is END after the last stage); None: the call stays."""
    for transition in transitions:
        if transition.matches(outcome, data):
            return transition
    return Transition("completed", next_stage) if outcome == "completed" else None


@dataclass(frozen=True)
class Node:
    """A stage as the graph checks see it."""

    name: str
    transitions: tuple[Transition, ...]
    max_attempts: int | None
    max_visits: int | None


@dataclass(frozen=True)
class Edge:
    source: int  # index of the stage
    to: str
    outcome: Outcome
    transition: int | None  # its index in the stage's transitions; None: the default edge


@dataclass(frozen=True)
class GraphProblem:
    stage: int  # index of the stage
    transition: int | None  # index of the transition it is about, if one
    problem: str


def check_graph(nodes: Sequence[Node]) -> list[GraphProblem]:
    """Every problem of a flow's graph: targets that do not exist, stages that cannot be
    reached from the first, and loops that nothing caps. A loop is capped when one of its
    edges counts against a cap: it leaves a stage with `max_attempts` on a failed or
    input-required outcome (each such turn is an attempt), or enters a stage with
    `max_visits`. With no uncapped loop every call ends: at END, or at ESCALATION when a cap
    runs out."""
    names = {node.name: index for index, node in enumerate(nodes)}
    problems = _shadowed(nodes)
    problems += [GraphProblem(index, position, f"stage {node.name}: transition to "
                             f"{transition.to!r}, which is not a stage, {END} or {ESCALATION}")
                for index, node in enumerate(nodes)
                for position, transition in enumerate(node.transitions)
                if transition.to not in names and transition.to not in TERMINALS]
    edges = [edge for edge in _edges(nodes) if edge.to in names]
    problems += _unreachable(nodes, names, edges)
    problems += _uncapped_loops(nodes, names, edges)
    return problems


def _shadowed(nodes: Sequence[Node]) -> list[GraphProblem]:
    """Transitions that can never match: after one for the same outcome without `when`."""
    problems = []
    for index, node in enumerate(nodes):
        decided: set[Outcome] = set()
        for position, transition in enumerate(node.transitions):
            if transition.on in decided:
                problems.append(GraphProblem(index, position, (
                    f"stage {node.name}: this transition can never match: one before it takes "
                    f"every {transition.on} outcome")))
            elif not transition.when:
                decided.add(transition.on)
    return problems


def _edges(nodes: Sequence[Node]) -> list[Edge]:
    """Every way a call can move between stages. Staying at a stage (a failed or
    input-required turn with no transition, or one to the stage itself) is not a move: the
    caller's retries are bounded by `max_attempts` and the call's step limit."""
    edges = []
    for index, node in enumerate(nodes):
        decided: set[Outcome] = set()
        for position, transition in enumerate(node.transitions):
            if transition.on in decided:
                continue  # shadowed: never taken
            if not transition.when:
                decided.add(transition.on)
            if transition.to == node.name and transition.on != "completed":
                continue
            edges.append(Edge(index, transition.to, transition.on, position))
        if not any(t.on == "completed" and not t.when for t in node.transitions):
            following = nodes[index + 1].name if index + 1 < len(nodes) else END
            edges.append(Edge(index, following, "completed", None))
    return edges


def _unreachable(nodes: Sequence[Node], names: Mapping[str, int],
                 edges: Sequence[Edge]) -> list[GraphProblem]:
    reached = {0}
    frontier = [0]
    while frontier:
        here = frontier.pop()
        for edge in edges:
            there = names[edge.to]
            if edge.source == here and there not in reached:
                reached.add(there)
                frontier.append(there)
    return [GraphProblem(index, None, f"stage {node.name} cannot be reached from "
                         f"{nodes[0].name}: no stage's transition leads to it")
            for index, node in enumerate(nodes) if index not in reached]


def _capped(edge: Edge, nodes: Sequence[Node], names: Mapping[str, int]) -> bool:
    """Each time the call takes the edge, a cap comes nearer: a failed turn is an attempt at
    its stage (an input-required one is only when its agent asks again, which a call that
    left and came back never does), and an entry counts against the entered stage's visits."""
    source, entered = nodes[edge.source], nodes[names[edge.to]]
    return ((source.max_attempts is not None and edge.outcome == "failed")
            or entered.max_visits is not None)


def _uncapped_loops(nodes: Sequence[Node], names: Mapping[str, int],
                    edges: Sequence[Edge]) -> list[GraphProblem]:
    """One problem per loop of uncapped edges (found by depth-first search: each edge that
    closes a loop), at the edge that closes it."""
    uncapped: dict[int, list[Edge]] = {index: [] for index in range(len(nodes))}
    for edge in edges:
        if not _capped(edge, nodes, names):
            uncapped[edge.source].append(edge)
    problems: list[GraphProblem] = []
    state = dict.fromkeys(range(len(nodes)), 0)  # 0 unseen, 1 on the path, 2 done
    path: list[int] = []

    def visit(here: int) -> None:
        state[here] = 1
        path.append(here)
        for edge in uncapped[here]:
            there = names[edge.to]
            if state[there] == 1:
                loop = [nodes[i].name for i in path[path.index(there):]] + [nodes[there].name]
                problems.append(GraphProblem(
                    edge.source, edge.transition,
                    f"stage {nodes[edge.source].name}: the loop {' → '.join(loop)} has no cap "
                    "(give a stage on it max_visits, or leave a stage with max_attempts on a "
                    "failed outcome)"))
            elif state[there] == 0:
                visit(there)
        path.pop()
        state[here] = 2

    for index in range(len(nodes)):
        if state[index] == 0:
            visit(index)
    return problems
