#!/usr/bin/env python3
"""Check that netcore's module graph has no circles.

Reads every .rs file under src/ (each file is one module: src/a/mod.rs and src/a.rs are `a`,
src/a/b.rs is `a::b`), collects the paths it names (`use` lines, braces expanded, and inline
`crate::`/`super::`/`self::` paths in code), resolves each to the deepest module file that
exists, and builds two graphs:

- modules: an edge A -> B when file A names something in module B;
- subsystems: the same edges folded onto the top-level module (`flow`, `server`, `stats`, ...);
  edges inside one subsystem are left out.

Both must be free of cycles (a module that imports another that imports it back, directly or
around a longer circle). `mod x;` declarations are not edges: a parent owning a child is not a
use of it; a parent that re-exports a child (`pub use x::Thing`) is. Also checked: nothing but
`main.rs` imports `cli` (the command line sits on top).

A `#[cfg(test)] mod tests { ... }` at the end of a file is read as a module of its own whose
`super` is the file. Exits 1 and names every circle found; 0 when the graph is layered.
Also checked: the bottom layer (sys, reactor, uring, stats, units) imports nothing above it.

Inside every folder, the same fold one level down: its files and its subfolders are its rooms
(a subfolder's modules folded onto it), and no import may run back up between rooms (a child
folder importing a module of its parent that imports the child folder back, e.g. `flow/udp/*`
using `flow/control.rs` while `flow/control.rs` uses `flow/udp/report.rs`), even where no two
files import each other.

In `flow/`, the protocol folders (udp, tcp, iperf3) are siblings: none imports another, and
none imports the receiver service (`flow/recv`), which stands above them and may import them
all. What two protocols share stands below them (`flow/tcp_engine`: netcore's TCP engine, run
by tcp and iperf3) and imports no protocol folder.
Usage: tools/check-layers.py [SRC_DIR] | --self-test
"""

import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "--self-test" else os.path.join(os.path.dirname(__file__), "..", "src")


def module_of(rel):
    """Module path (tuple) of a file relative to src/."""
    parts = rel[:-3].split(os.sep)
    if parts == ["lib"] or parts == ["main"]:
        return () if parts == ["lib"] else ("<main>",)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    for line in text.splitlines():
        # drop // comments and string literals (crude, but enough for paths)
        line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
        i = line.find("//")
        out.append(line if i < 0 else line[:i])
    return "\n".join(out)


def expand_use(tree):
    """Expand `a::{b, c::{d, e}}` into [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^([^{]*)\{(.*)\}$", tree)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    out = []
    for it in items:
        for leaf in expand_use(it):
            out.append(prefix + leaf)
    return out


def resolve(path, here, modules):
    """Resolve a path named in module `here` to the deepest existing module, or None."""
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("self", "super"):
        base = list(here)
        rest = segs
        while rest and rest[0] in ("self", "super"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
        base = tuple(base)
    elif here + (segs[0],) in modules:
        base, rest = here, segs
    else:
        return None  # std, an external crate, or a local name
    best = base
    cur = base
    for s in rest:
        cur = cur + (s,)
        if cur in modules:
            best = cur
        else:
            break
    return best


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    modules, edges = graph(SRC)
    problems = check(edges)
    if problems:
        print("\n".join(problems))
        print(f"check-layers: {len(problems)} problem(s)")
        return 1
    n = sum(len(v) for v in edges.values())
    print(f"check-layers: {len(modules)} modules, {n} imports, no circles")
    return 0


def graph(src):
    """(modules, edges) of the crate under `src`."""
    files = {}
    for root, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                full = os.path.join(root, n)
                files[module_of(os.path.relpath(full, src))] = full
    modules = set(files)
    edges = {m: set() for m in modules}
    use_re = re.compile(r"(?:^|\s)(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.S)
    inline_re = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
    for mod, full in files.items():
        with open(full, encoding="utf-8") as f:
            text = strip_comments(f.read())
        m = re.search(r"#\[cfg\(test\)\]\s*(?:pub\s+)?mod\s+\w+\s*\{", text)
        parts = [(mod, text)] if not m else [(mod, text[: m.start()]), (mod + ("tests",), text[m.end() :])]
        for here, body in parts:
            named = []
            for u in use_re.finditer(body):
                named.extend(expand_use(u.group(1)))
            body_wo_use = use_re.sub(" ", body)
            named.extend(x.group(1) for x in inline_re.finditer(body_wo_use))
            for p in named:
                target = resolve(p, here, modules)
                if target is not None and target != mod:
                    edges[mod].add(target)
    return modules, edges


# The bottom layer: the system and the plain tools every command uses. They import nothing
# from the layers above them.
BOTTOM = {"sys", "reactor", "uring", "stats", "units"}


# The data protocols' folders in flow/: siblings, none importing another.
PROTOCOLS = {"udp", "tcp", "iperf3"}
# Folders of flow/ below the protocols, shared by several: they import no protocol folder.
# netcore's TCP engine (data connections, TcpReport) runs netcore's TCP tests and iperf3's.
BELOW_PROTOCOLS = {"tcp_engine"}
# Folders of flow/ that stand above the protocols and may import them all.
ABOVE_PROTOCOLS = {"recv"}


def protocol_rules(a, b):
    """What the import a -> b breaks of flow/'s protocol rules, or None."""
    if a[:1] != ("flow",) or b[:1] != ("flow",) or len(a) < 3 or len(b) < 2:
        return None
    pa, pb = a[1], b[1]
    if pa in BELOW_PROTOCOLS and pb in PROTOCOLS | ABOVE_PROTOCOLS:
        return f"{fmt(a)} imports {fmt(b)}: flow/{pa} stands below the protocol folders"
    if pa not in PROTOCOLS or pa == pb:
        return None
    if pb in PROTOCOLS:
        return f"{fmt(a)} imports {fmt(b)}: a protocol folder never imports a sibling protocol's folder (flow/{pa} -> flow/{pb})"
    if pb in ABOVE_PROTOCOLS:
        return f"{fmt(a)} imports {fmt(b)}: flow/{pb} stands above the protocol folders"
    return None


def rooms(edges):
    """Per folder: the graph of its rooms (its files and subfolders, each subfolder folded)."""
    out = {}
    for a, bs in edges.items():
        for b in bs:
            n = 0
            while n < min(len(a), len(b)) and a[n] == b[n]:
                n += 1
            # a and b share the folder a[:n]; their rooms in it are a[:n+1] and b[:n+1]. An
            # import of the folder itself (its mod.rs), or from it, is a parent's, not a room's.
            if n >= len(a) or n >= len(b) or n == 0:
                continue  # top level: the subsystem fold covers it
            folder = a[:n]
            out.setdefault(folder, {}).setdefault(a[: n + 1], set()).add(b[: n + 1])
    return out


def check(edges):
    """Every rule broken in the graph `edges`, one line each."""
    problems = []
    for a, bs in edges.items():
        for b in sorted(bs):
            p = protocol_rules(a, b)
            if p:
                problems.append(p)
            if b[:1] == ("cli",) and a[:1] not in (("cli",), ("<main>",)):
                problems.append(f"{fmt(a)} imports {fmt(b)}: only main.rs and cli/ may use the command line")
            if a[:1] and a[0] in BOTTOM and b[:1] and b[0] not in BOTTOM:
                problems.append(f"{fmt(a)} imports {fmt(b)}: {a[0]}/ is below every command's code")
    for label, g in (("module", edges), ("subsystem", fold(edges))):
        for cyc in cycles(g):
            problems.append(f"{label} circle: " + " -> ".join(fmt(c) for c in cyc + [cyc[0]]))
    for folder, g in sorted(rooms(edges).items()):
        for cyc in cycles(g):
            # a circle of rooms that is a module circle too is already named above
            if not any(any(len(m) > len(c) and m[: len(c)] == c for m in edges) for c in cyc):
                continue
            problems.append(
                f"an import runs back up in {fmt(folder)}/: " + " -> ".join(fmt(c) for c in cyc + [cyc[0]])
            )
    return problems


def self_test():
    """The checker must see what it is there to see (run with --self-test)."""
    import tempfile

    def tree(files):
        d = tempfile.mkdtemp()
        for rel, text in files.items():
            path = os.path.join(d, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return d

    cases = [
        ("a child importing its re-exporting parent", {
            "lib.rs": "pub mod a;\n",
            "a/mod.rs": "pub mod b;\npub use b::B;\npub struct A;\n",
            "a/b.rs": "use super::A;\npub struct B;\n",
        }, "module circle"),
        ("a circle through three files, one inline path", {
            "lib.rs": "pub mod x;\n",
            "x/mod.rs": "pub mod p;\npub mod q;\npub mod r;\n",
            "x/p.rs": "use super::q::Q;\npub struct P;\n",
            "x/q.rs": "use crate::x::r::{R, Other};\npub struct Q;\n",
            "x/r.rs": "fn f() { let _ = crate::x::p::P; }\npub struct R;\n",
        }, "module circle"),
        ("two folders importing each other", {
            "lib.rs": "pub mod m;\npub mod n;\n",
            "m.rs": "use crate::n::N;\npub struct M;\n",
            "n/mod.rs": "pub mod deep;\n",
            "n/deep.rs": "use crate::m::M;\n",
        }, "subsystem circle"),
        ("the bottom layer importing a command", {
            "lib.rs": "pub mod sys;\npub mod flow;\n",
            "sys.rs": "use crate::flow::F;\n",
            "flow.rs": "pub struct F;\n",
        }, "below every command"),
        ("a protocol folder importing a sibling protocol's folder", {
            "lib.rs": "pub mod flow;\n",
            "flow/mod.rs": "pub mod udp;\npub mod tcp;\n",
            "flow/udp/mod.rs": "pub mod sender;\n",
            "flow/udp/sender.rs": "use crate::flow::tcp::spec::TcpSpec;\n",
            "flow/tcp/mod.rs": "pub mod spec;\n",
            "flow/tcp/spec.rs": "pub struct TcpSpec;\n",
        }, "never imports a sibling protocol"),
        ("iperf3 importing tcp (they share the engine below them instead)", {
            "lib.rs": "pub mod flow;\n",
            "flow/mod.rs": "pub mod tcp;\npub mod iperf3;\n",
            "flow/iperf3/mod.rs": "pub mod server;\n",
            "flow/iperf3/server.rs": "fn f() { crate::flow::tcp::serve(); }\n",
            "flow/tcp/mod.rs": "pub fn serve() {}\n",
        }, "never imports a sibling protocol"),
        ("the shared engine importing a protocol folder", {
            "lib.rs": "pub mod flow;\n",
            "flow/mod.rs": "pub mod tcp;\npub mod tcp_engine;\n",
            "flow/tcp_engine/mod.rs": "pub mod stream;\n",
            "flow/tcp_engine/stream.rs": "use crate::flow::tcp::spec::TcpSpec;\n",
            "flow/tcp/mod.rs": "pub mod spec;\n",
            "flow/tcp/spec.rs": "pub struct TcpSpec;\n",
        }, "stands below the protocol folders"),
        ("a protocol folder importing the receiver room above it", {
            "lib.rs": "pub mod flow;\n",
            "flow/mod.rs": "pub mod udp;\npub mod recv;\n",
            "flow/udp/mod.rs": "pub mod bidir;\n",
            "flow/udp/bidir.rs": "use crate::flow::recv::receiver::Receiver;\n",
            "flow/recv/mod.rs": "pub mod receiver;\n",
            "flow/recv/receiver.rs": "pub struct Receiver;\n",
        }, "stands above the protocol folders"),
        ("the receiver room over every protocol, tcp and iperf3 on the engine: fine", {
            "lib.rs": "pub mod flow;\n",
            "flow/mod.rs": "pub mod udp;\npub mod tcp;\npub mod tcp_engine;\npub mod iperf3;\npub mod recv;\npub mod control;\n",
            "flow/control.rs": "pub struct Conn;\n",
            "flow/udp/mod.rs": "pub mod wire;\n",
            "flow/udp/wire.rs": "use crate::flow::control::Conn;\n",
            "flow/tcp_engine/mod.rs": "pub mod stream;\n",
            "flow/tcp_engine/stream.rs": "use super::super::control::Conn;\n",
            "flow/tcp/mod.rs": "pub mod client;\n",
            "flow/tcp/client.rs": "use crate::flow::tcp_engine::stream;\n",
            "flow/iperf3/mod.rs": "pub mod server;\n",
            "flow/iperf3/server.rs": "use crate::flow::tcp_engine::stream;\n",
            "flow/recv/mod.rs": "pub mod receiver;\n",
            "flow/recv/receiver.rs": "use crate::flow::{udp::wire, tcp::client, iperf3::server};\n",
        }, None),
        ("an import running back up into a parent's file (no two files in a circle)", {
            "lib.rs": "pub mod flow;\n",
            "flow/mod.rs": "pub mod control;\npub mod udp;\n",
            "flow/control.rs": "use crate::flow::udp::report::Stats;\npub struct Conn;\n",
            "flow/udp/mod.rs": "pub mod report;\npub mod sender;\n",
            "flow/udp/report.rs": "pub struct Stats;\n",
            "flow/udp/sender.rs": "use crate::flow::control::Conn;\n",
        }, "runs back up in flow/"),
        ("a test module using its own file is fine", {
            "lib.rs": "pub mod a;\n",
            "a.rs": "pub struct A;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::a::A;\n}\n",
        }, None),
    ]
    failed = 0
    for name, files, want in cases:
        edges = graph(tree(files))[1]
        got = check(edges)
        ok = (not got) if want is None else any(want in p for p in got)
        if not ok:
            failed += 1
            print(f"self-test FAILED: {name}: {got}")
    print(f"check-layers self-test: {len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


def fmt(m):
    return "crate" if not m else "::".join(m)


def fold(edges):
    top = {}
    for a, bs in edges.items():
        ta = a[:1]
        top.setdefault(ta, set())
        for b in bs:
            tb = b[:1]
            if ta != tb and tb != ():
                top[ta].add(tb)
    return top


def cycles(graph):
    """One representative circle per strongly connected component of size > 1 (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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
                out.append(path_in(graph, set(comp)))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def path_in(graph, comp):
    """A concrete circle through the component: walk from its smallest node back to it."""
    start = min(comp)
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, ())):
            if w not in comp:
                continue
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path))
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return sorted(comp)


if __name__ == "__main__":
    sys.exit(main())
