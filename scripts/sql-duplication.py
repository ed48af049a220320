#!/usr/bin/env python3
"""Lines of logic that a SQLite module and its Postgres namesake still repeat.

Each store backend (storage/src/sqlite, storage/src/postgres) should hold only what
differs by dialect; what they share lives once in storage/src/sql. This prints, per
pair of same-named modules, their lines of logic (comments, lone braces and the like
left out) and how many of them stand in both in runs of three or more, after
placeholders and backend names are made alike.
"""
import difflib
import os
import re

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "storage", "src")
TRIVIAL = {"})", "});", "}", "{", "Ok(())", ")", ".await", "?;"}


def norm(line):
    line = line.strip()
    line = re.sub(r"\$\d+|\?\d*", "?", line)
    for name in ["Postgres", "Sqlite", "SQLite", "Pg", "postgres", "sqlite"]:
        line = line.replace(name, "DB")
    return line


def logic(path):
    lines = (norm(l) for l in open(path, encoding="utf-8"))
    return [l for l in lines if len(l) > 3 and not l.startswith("//") and l not in TRIVIAL]


def main():
    sqlite, postgres = os.path.join(BASE, "sqlite"), os.path.join(BASE, "postgres")
    worst = 0
    for name in sorted(set(os.listdir(sqlite)) & set(os.listdir(postgres))):
        if not name.endswith(".rs"):
            continue
        a, b = logic(os.path.join(sqlite, name)), logic(os.path.join(postgres, name))
        matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
        same = sum(m.size for m in matcher.get_matching_blocks() if m.size >= 3)
        worst = max(worst, same)
        print(f"{name:15} sqlite {len(a):4}  postgres {len(b):4}  repeated {same:4}")
    print(f"most repeated in one pair: {worst}")


if __name__ == "__main__":
    main()
