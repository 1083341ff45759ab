#!/usr/bin/env python3
"""List the functions of src/ longer than N lines (default 120), longest first.

A function's length runs from its `fn` line to the line of its closing brace, both counted
(attributes and doc comments above it are not). Comments, string literals (raw ones too) and
character literals are blanked before braces are matched, so a `{` in a format string does not
count. Nested functions are listed on their own (and count inside their parent); closures are
part of the function that holds them. Methods are named `Type::name` after their `impl`.

Exits 1 when any function is over the limit, 0 otherwise; with --report, always 0 (CI prints the
list while the last long functions are being split).
Usage: tools/fn-length.py [--max N] [--report] [SRC_DIR] | --self-test
"""

import os
import re
import sys


def blank(text):
    """`text` with comments, strings and char literals replaced by spaces (newlines kept)."""
    out = list(text)
    i, n = 0, len(text)

    def wipe(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            wipe(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            wipe(i, j)
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            wipe(i, j)
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            wipe(i, j + 1)
            i = j + 1
        elif c == "'":
            # a char literal ('x', '\n', '\u{..}', '{'), not a lifetime ('a, 'static)
            m = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'").match(text, i)
            if m:
                wipe(i, m.end())
                i = m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def functions(text):
    """(name, first line, last line) of every function with a body in the Rust source `text`."""
    clean = blank(text)
    match, stack = {}, []
    for i, c in enumerate(clean):
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            match[stack.pop()] = i
    line_of = lambda pos: clean.count("\n", 0, pos) + 1  # noqa: E731
    impls = []  # (open brace, close brace, type name)
    for m in re.finditer(r"\bimpl\b", clean):
        head_end = min((p for p in (clean.find("{", m.end()), clean.find(";", m.end())) if p >= 0), default=-1)
        if head_end < 0 or clean[head_end] != "{":
            continue
        head = clean[m.end() : head_end]
        head = re.split(r"\bwhere\b", head)[0]
        if re.search(r"\bfor\b", head):
            head = re.split(r"\bfor\b", head)[-1]
        names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", re.sub(r"<.*", "", head.strip()) or head)
        impls.append((head_end, match.get(head_end, head_end), names[-1] if names else "?"))
    out = []
    for m in re.finditer(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)", clean):
        brace, semi = clean.find("{", m.end()), clean.find(";", m.end())
        if brace < 0 or (0 <= semi < brace) or brace not in match:
            continue  # a declaration without a body
        name = m.group(1)
        inside = [t for (a, b, t) in impls if a < m.start() < b]
        if inside:
            name = f"{inside[-1]}::{name}"
        out.append((name, line_of(m.start()), line_of(match[brace])))
    return out


def scan(src, limit):
    """Every function of the .rs files under `src` longer than `limit` lines: (lines, file, line, name)."""
    long = []
    for root, _, names in os.walk(src):
        for f in sorted(names):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            for name, first, last in functions(text):
                n = last - first + 1
                if n > limit:
                    long.append((n, os.path.relpath(path, os.path.join(src, "..")), first, name))
    return sorted(long, key=lambda t: (-t[0], t[1], t[2]))


def self_test():
    src = '''
struct S;
impl<T: Clone> Trait for Wrapper<T> where T: Send {
    fn method(&self) -> String {
        let s = "}}}";
        let r = r#"{ "a": 1 }"#;
        let c = '{';
        let l: &'static str = "x";
        // }
        /* { */
        format!("{s}{r}{c}{l}")
    }
}
trait T { fn decl(&self); fn with_body(&self) { } }
fn free() {
    fn inner() {}
}
'''
    got = functions(src)
    want = [("Wrapper::method", 4, 12), ("T::decl", None, None), ("with_body", 14, 14), ("free", 15, 17), ("inner", 16, 16)]
    names = [g[0] for g in got]
    ok = ("Wrapper::method", 4, 12) in got and ("free", 15, 17) in got and ("inner", 16, 16) in got
    ok = ok and "decl" not in " ".join(names) and any(n.endswith("with_body") for n in names)
    print(f"fn-length self-test: {'passed' if ok else 'FAILED: ' + repr(got) + ' want ' + repr(want)}")
    return 0 if ok else 1


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    limit, report, src = 120, False, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--max" and args and args[0].isdigit():
            limit = int(args.pop(0))
        elif a == "--report":
            report = True
        elif not a.startswith("-") and os.path.isdir(a):
            src = a
        else:
            print(f"fn-length: bad argument {a!r}\nusage: tools/fn-length.py [--max N] [--report] [SRC_DIR] | --self-test", file=sys.stderr)
            return 2
    long = scan(src, limit)
    for n, path, line, name in long:
        print(f"{path}:{line}: {name} is {n} lines")
    print(f"fn-length: {len(long)} function(s) over {limit} lines")
    return 1 if long and not report else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
