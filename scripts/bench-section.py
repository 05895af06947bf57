#!/usr/bin/env python3
"""Replaces one benchmark's section of BENCHMARKS.md, keeping the others.

    scripts/bench-section.py BENCHMARKS.md SECTION.md NAME

The section sits between <!-- NAME:begin --> and <!-- NAME:end --> markers; it is appended
when the markers are not there yet. Every bench-*.sh script writes its results this way.
"""
import sys

path, section, name = sys.argv[1:4]
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
try:
    text = open(path).read()
except FileNotFoundError:
    text = (
        "# lomob benchmarks\n\nEach section is written by the script it names; run that script"
        " again to refresh it.\nNumbers come from a shared 2-core build machine, so treat"
        " differences under ~15% as noise.\n"
    )
block = begin + "\n" + open(section).read().rstrip("\n") + "\n" + end + "\n"
if begin in text and end in text:
    a = text.index(begin)
    b = text.index(end) + len(end)
    if text[b : b + 1] == "\n":
        b += 1
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block
open(path, "w").write(text)
