"""The one propagation every domain shares: a walk over the op graph driven by the domain's table.

A domain is a table `{op class: rule}` (jax_verify's idea). The forward walk calls `rule(dom, op, *inputs)`
on the abstract values of an op's inputs, in topological order, and frees each value after its last
use; joins (`AddOp`, `CatOp`) are ordinary rules. The backward walk (linear bounds pushed from an op's output
to the network input, CROWN-style) calls `rule(dom, op, a)` -> one coefficient per input of the op and
sums what reaches the same op from several consumers (a residual fork). An op whose class has no rule in a
domain's table raises `UnsupportedLayerError` naming the op, the traced node and the domain: written once.
"""

from __future__ import annotations

from typing import Any, Callable

from veritrain.bounds.ops import Op, UnsupportedLayerError

Rule = Callable[..., Any]
Table = dict[type, Rule]


_FOUND: dict[tuple[int, type], tuple[Table, Rule]] = {}  # (id(table), op class) -> (table, rule)


def rule_for(table: Table, op: Op, domain: str) -> Rule:
    """The rule of op's class (or its nearest base class) in `table` (looked up once per table and class;
    the cache holds the table, so its id is never reused while cached)."""
    hit = _FOUND.get((id(table), type(op)))
    if hit is not None and hit[0] is table:
        return hit[1]
    for cls in type(op).__mro__:
        rule = table.get(cls)
        if rule is not None:
            _FOUND[(id(table), type(op))] = (table, rule)
            return rule
    known = ", ".join(sorted(c.__name__ for c in table))
    raise UnsupportedLayerError(f"the {domain} domain has no sound rule for {op.describe()}; it handles: {known}")


def check(ops: list[Op], table: Table, domain: str) -> None:
    """Raise `UnsupportedLayerError` before any work when an op of the graph has no rule in the table."""
    for op in ops:
        rule_for(table, op, domain)


def sources(ops: list[Op]) -> list[Op | None]:
    """The ops outside `ops` that ops read from (None: the network input)."""
    inside = set(map(id, ops))
    return list({id(s): s for op in ops for s in op.src if id(s) not in inside}.values())


def entry(ops: list[Op]) -> Op | None:
    """The one op outside `ops` that ops read from (None: the network input)."""
    outside = sources(ops)
    if len(outside) > 1:
        raise ValueError("a graph slice must read from one op only")
    return outside[0] if outside else None


def reads_only(ops: list[Op], op: Op | None) -> bool:
    """Whether `op` is the only op outside `ops` that they read (a slice that can start from its value)."""
    outside = sources(ops)
    return not ops or (len(outside) == 1 and outside[0] is op)


def forward(
    ops: list[Op], table: Table, start: Any, dom: Any, domain: str, visit: Callable[[Op, list[Any]], None] | None = None
) -> Any:
    """The value at the output of ops[-1], `start` being the value at the graph's entry (`entry`).

    `visit(op, inputs)` (optional) sees every op with its input values before its rule runs."""
    if not ops:
        return start
    if _is_chain(ops):  # the common case (every nn.Sequential): no bookkeeping
        value = start
        for op in ops:
            if visit is not None:
                visit(op, [value])
            value = rule_for(table, op, domain)(dom, op, value)
        return value
    uses: dict[int, int] = {}
    for op in ops:
        for s in op.src:
            uses[id(s)] = uses.get(id(s), 0) + 1
    values: dict[int, Any] = {id(entry(ops)): start}
    for op in ops:
        inputs = [values[id(s)] for s in op.src]
        if visit is not None:
            visit(op, inputs)
        values[id(op)] = rule_for(table, op, domain)(dom, op, *inputs)
        for s in op.src:
            uses[id(s)] -= 1
            if uses[id(s)] == 0:
                del values[id(s)]
    return values[id(ops[-1])]


def backward(ops: list[Op], table: Table, a: Any, dom: Any, domain: str) -> Any:
    """Push the coefficient `a` at the output of ops[-1] back to the graph's entry; returns it there.

    Ops the output does not depend on are skipped; coefficients meeting at one op (a fork) are summed."""
    if not ops:
        return a
    if _is_chain(ops):
        for op in reversed(ops):
            (a,) = rule_for(table, op, domain)(dom, op, a)
        return a
    acc: dict[int, Any] = {id(ops[-1]): a}
    start = entry(ops)
    for op in reversed(ops):
        a = acc.pop(id(op), None)
        if a is None:
            continue
        outs = rule_for(table, op, domain)(dom, op, a)
        for s, part in zip(op.src, outs):
            acc[id(s)] = part if id(s) not in acc else acc[id(s)] + part
    return acc[id(start)]


def _is_chain(ops: list[Op]) -> bool:
    """Whether each op after the first reads exactly the previous one (and the first one input)."""
    if len(ops[0].src) != 1:
        return False
    prev = ops[0]
    for op in ops[1:]:
        src = op.src
        if len(src) != 1 or src[0] is not prev:
            return False
        prev = op
    return True


__all__ = ["Rule", "Table", "backward", "check", "entry", "forward", "reads_only", "rule_for", "sources"]
