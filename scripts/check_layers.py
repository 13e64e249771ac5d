"""Checks that the crate's modules only use modules of their own layer or the layers below.

The layer table is the one in README.md (section "Layout") and ARCHITECTURE.md. Every `crate::`
path in `src/` (in `use` lines and in expressions) is an edge from the file's top-level module to
the named top-level module. An edge to a higher layer fails the check, and so does a cycle among
the top-level modules of one layer. Run by the test command; `--graph` prints the module graph
(edges with their counts) and the line counts per layer.

Usage: python3 scripts/check_layers.py [--graph]
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__import__("os").environ.get("LAYERS_SRC") or Path(__file__).resolve().parents[1] / "src")

# Bottom to top. A module may use the modules of its own row and of the rows below it.
LAYERS = [
    ("base", ["sys", "log", "stats", "http", "config", "interpreter", "cli", "client"]),
    ("services", ["handoff", "state", "park", "block", "share", "cache", "static_files", "cron"]),
    ("sides", ["conn", "wsgi"]),
    ("threads", ["pool"]),
    ("wiring", ["server"]),
]
# Modules of one row that must not use each other at all.
APART = [("conn", "wsgi")]

LAYER_OF = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
PATH = re.compile(r"\bcrate::([a-z_]+)")
# `use crate::{a, b::c}` groups.
GROUP = re.compile(r"use\s+crate::\{([^;]*)\};", re.S)


def module_of(path):
    rel = path.relative_to(SRC)
    first = rel.parts[0]
    return first[:-3] if first.endswith(".rs") else first


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def edges():
    found = defaultdict(int)
    for path in sorted(SRC.rglob("*.rs")):
        src = module_of(path)
        if src in ("lib", "main"):
            continue
        text = strip_comments(path.read_text())
        targets = PATH.findall(text)
        for group in GROUP.findall(text):
            targets += re.findall(r"(?:^|,)\s*([a-z_]+)", group)
        for dst in targets:
            if dst != src:
                found[(src, dst)] += 1
    return found


def lines_per_layer():
    counts = defaultdict(int)
    for path in SRC.rglob("*.rs"):
        m = module_of(path)
        layer = LAYERS[LAYER_OF[m]][0] if m in LAYER_OF else m
        counts[layer] += len(path.read_text().splitlines())
    return counts


def cycles(graph, nodes):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    found = edges()
    problems = []
    graph = defaultdict(set)
    modules = {module_of(p) for p in SRC.rglob("*.rs")} - {"lib", "main"}
    for m in sorted(modules):
        if m not in LAYER_OF:
            problems.append(f"module `{m}` is in no layer: add it to the table (scripts/check_layers.py, README, ARCHITECTURE.md)")
    for (src, dst), n in sorted(found.items()):
        graph[src].add(dst)
        if src not in LAYER_OF or dst not in LAYER_OF:
            continue
        if LAYER_OF[dst] > LAYER_OF[src]:
            problems.append(f"`{src}` ({LAYERS[LAYER_OF[src]][0]}) uses `{dst}` ({LAYERS[LAYER_OF[dst]][0]}), a layer above ({n} times)")
        if (src, dst) in APART or (dst, src) in APART:
            problems.append(f"`{src}` uses `{dst}`: they must not know each other")
    for comp in cycles(graph, modules):
        problems.append("import cycle: " + " <-> ".join(comp))
    if "--graph" in sys.argv:
        for i, (name, mods) in enumerate(LAYERS):
            print(f"{i + 1} {name}: " + ", ".join(mods))
        print()
        for src in sorted(graph):
            print(f"{src} -> " + ", ".join(f"{d} ({found[(src, d)]})" for d in sorted(graph[src])))
        print()
        counts = lines_per_layer()
        for name, _ in LAYERS:
            print(f"{name}: {counts.get(name, 0)} lines")
        for other in sorted(set(counts) - {n for n, _ in LAYERS}):
            print(f"{other}: {counts[other]} lines")
    if problems:
        for p in problems:
            print("layers:", p, file=sys.stderr)
        sys.exit(1)
    print(f"layers: ok ({len(modules)} modules, {sum(len(v) for v in graph.values())} edges, none upward, no cycle)")


if __name__ == "__main__":
    main()
