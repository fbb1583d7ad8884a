"""An import-linter contract that no module takes part in an import cycle, at any distance.

The library's ``acyclic_siblings`` contract compares packages that share a parent, so a cycle
that runs through two top-level packages (``arflow.charges -> activities.invoice ->
arflow.charges``) passes it; the forbidden contracts catch the known wrong directions, this one
catches every other loop. It looks at the module graph import-linter builds (function-level
imports included), finds its strongly connected components and reports each one with a path
round it.
"""

from __future__ import annotations

from collections.abc import Iterable

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def cycles(graph: grimp.ImportGraph, roots: Iterable[str]) -> list[list[str]]:
    """The strongly connected components of more than one module among ``roots``' modules
    (Tarjan's algorithm, iterative), each sorted, the list sorted."""
    ours = {m for m in graph.modules if m.split(".")[0] in set(roots)}
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & ours) for m in ours}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(ours):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(found)


def loop_through(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    """One import path from the component's first module back to itself."""
    first, members = component[0], set(component)
    for nxt in sorted(graph.find_modules_directly_imported_by(first) & members):
        back = graph.find_shortest_chain(importer=nxt, imported=first)
        if back:
            return [first, *back]
    return component


class AcyclicModulesContract(Contract):
    """No import cycle between any two modules of ``root_packages``."""

    type_name = "acyclic_modules"
    root_packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        roots = [str(r) for r in self.root_packages]  # type: ignore[attr-defined]
        loops = [loop_through(graph, c) for c in cycles(graph, roots)]
        return ContractCheck(kept=not loops, warnings=[], metadata={"loops": loops})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for loop in check.metadata["loops"]:
            output.print_error("Import cycle: " + " -> ".join(loop))
            output.new_line()
