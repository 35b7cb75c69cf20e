"""Draw lib/'s import graph into docs/architecture.md (a Mermaid flowchart, one box per layer).

    python scripts/architecture_diagram.py          # rewrite the diagram between its markers
    python scripts/architecture_diagram.py --check  # exit 1 if it is out of date (tests/test_architecture.py)

The graph is what ``tests/test_architecture.py`` parses (imports inside functions included),
drawn as its transitive reduction: an edge a --> b is kept unless a reaches b through other
imports, so the picture shows the direct dependencies that matter and stays readable. GitHub and
JupyterLab render Mermaid; the source reads as a list of edges.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lib  # noqa: E402
from tests.test_architecture import import_graph  # noqa: E402

DOC = ROOT / "docs" / "architecture.md"
START, END = "<!-- import-graph:start (scripts/architecture_diagram.py) -->", "<!-- import-graph:end -->"


def transitive_reduction(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop a -> b when b is reachable from a through another of a's imports (the graph is acyclic)."""
    reach: dict[str, set[str]] = {}

    def reachable(node: str) -> set[str]:
        if node not in reach:
            reach[node] = set()
            for target in graph[node]:
                reach[node] |= {target} | reachable(target)
        return reach[node]

    return {a: {b for b in targets if not any(b in reachable(c) for c in targets - {b})}
            for a, targets in graph.items()}


def mermaid() -> str:
    """The flowchart: importing module --> imported module, modules grouped by ``lib.LAYERS``."""
    edges = transitive_reduction(import_graph())
    lines = ["```mermaid", "flowchart BT"]
    for layer, modules in lib.LAYERS:
        lines.append(f"  subgraph layer_{layer} [{layer} layer]")
        lines += [f"    {m}" for m in modules]
        lines.append("  end")
    for layer, modules in lib.LAYERS:
        for module in modules:
            lines += [f"  {module} --> {target}" for target in sorted(edges.get(module, ()))]
    return "\n".join(lines + ["```"])


def render(text: str) -> str:
    """``text`` with the block between the markers replaced by the current diagram."""
    if START not in text or END not in text:
        raise SystemExit(f"error: {DOC.name} lacks the markers {START!r} ... {END!r}; add them where the "
                         "diagram goes")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{mermaid()}\n{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the diagram is out of date")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print("docs/architecture.md's import graph is out of date: run python scripts/architecture_diagram.py")
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
