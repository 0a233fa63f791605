#!/usr/bin/env python3
"""Import cycles between sibling modules of each crate.

A module that uses a sibling, which uses it back (directly or around a longer loop),
blurs which of them sits on top. For every crate's `src/` this reads each file's
`crate::`, `super::` and `self::` paths (in `use` statements, braces expanded, and
inline), resolves each to the deepest module it names, and lifts every reference to the
two children of the modules' nearest common ancestor: `crate::a::b` used in `crate::c::d`
is an edge a -> c's sibling a, from c. References between a module and its own ancestors
or descendants are not cycles (a parent declares its children), nor are unit tests. Strongly connected
groups of more than one sibling are printed, and the exit status is 1 when there are any.

Usage: scripts/check-module-cycles.py [crate-dir ...]   (default: api domain read-models)
"""

import re
import sys
from pathlib import Path

CRATES = ["api", "domain", "read-models"]


def module_of(src: Path, file: Path) -> tuple:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text: str) -> str:
    # Unit tests (`#[cfg(test)] mod tests`, at the end of a file) are not part of the
    # module structure.
    text = re.split(r"#\[cfg\(test\)\]\s*mod \w+ \{", text)[0]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def expand(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix = tree[:i]
    depth, parts, cur = 0, [], ""
    for ch in tree[i + 1 : tree.rfind("}")]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p.strip():
            out.extend(expand(prefix + p.strip()))
    return out


def paths_in(text: str) -> list:
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        found.extend(expand(re.sub(r"\s+", " ", m.group(1))))
    body = re.sub(r"\buse\s+[^;]+;", "", text)
    found.extend(m.group(0) for m in re.finditer(r"\b(?:crate|super|self)(?:::\w+)+", body))
    return found


def resolve(path: str, here: tuple, modules: set):
    segs = [s.strip() for s in path.split(" as ")[0].split("::") if s.strip()]
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = list(here)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
        base, rest = tuple(base), segs
    else:
        return None
    target = base
    for s in rest:
        if target + (s,) in modules:
            target = target + (s,)
        else:
            break
    return target


def sccs(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            out.append(group)

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def check(crate: Path) -> list:
    src = crate / "src"
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f) for f in files}
    edges, why = {}, {}
    for f in files:
        here = module_of(src, f)
        for p in paths_in(strip_comments(f.read_text())):
            target = resolve(p, here, modules)
            if target is None:
                continue
            n = 0
            while n < min(len(here), len(target)) and here[n] == target[n]:
                n += 1
            if n == len(here) or n == len(target):
                continue  # ancestor or descendant
            a, b = here[: n + 1], target[: n + 1]
            edges.setdefault(a, set()).add(b)
            why.setdefault((a, b), f"{f.relative_to(crate.parent)}: {p}")
    nodes = sorted(set(edges) | {b for bs in edges.values() for b in bs})
    found = []
    for group in sccs(nodes, edges):
        if len(group) > 1:
            names = sorted("::".join(g) for g in group)
            members = set(group)
            examples = [
                why[(a, b)] for a in sorted(group) for b in sorted(edges.get(a, ())) if b in members
            ]
            found.append((crate.name, names, examples))
    return found


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    crates = [root / c for c in (sys.argv[1:] or CRATES)]
    cycles = [c for crate in crates for c in check(crate)]
    for crate, names, examples in cycles:
        print(f"module cycle in {crate}: {' <-> '.join(names)}", file=sys.stderr)
        for e in examples:
            print(f"  {e}", file=sys.stderr)
    if not cycles:
        print(f"module cycles: none ({', '.join(c.name for c in crates)})")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
