#!/usr/bin/env python3
"""Every relative link in the project's markdown resolves: the file exists and, for a link to a
heading (`FILE.md#anchor`), the heading does (GitHub's anchor rule: lower case, punctuation
dropped, spaces to hyphens). Exits 1 naming each broken link.

Usage: tools/check-links.py [FILE.md ...]   (default: README.md, docs/*.md, ARCHITECTURE.md,
CHANGELOG.md) | --self-test
"""

import glob
import os
import re
import sys

LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading):
    t = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", t).replace(" ", "-")


def anchors(path):
    out, code = set(), False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            code = not code
        elif not code and line.startswith("#"):
            out.add(anchor(line))
    return out


def broken(path):
    bad = []
    for m in LINK.finditer(open(path, encoding="utf-8").read()):
        url = m.group(1)
        if re.match(r"^[a-z]+:", url):
            continue
        target, _, frag = url.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
        if not os.path.exists(full):
            bad.append(f"{path}: {url}: no such file")
        elif frag and full.endswith(".md") and frag not in anchors(full):
            bad.append(f"{path}: {url}: no such heading")
    return bad


def self_test():
    assert anchor("## `netcore blast` / `netcore recv`") == "netcore-blast--netcore-recv"
    assert anchor("### The two commands: `blast` and `recv`") == "the-two-commands-blast-and-recv"
    print("check-links self-test: ok")


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    os.chdir(root)
    files = sys.argv[1:] or ["README.md", "ARCHITECTURE.md", "CHANGELOG.md"] + sorted(glob.glob("docs/*.md"))
    bad = [b for f in files for b in broken(f)]
    for b in bad:
        print(b)
    print(f"check-links: {len(files)} files, {len(bad)} broken links")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
