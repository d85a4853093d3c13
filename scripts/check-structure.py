#!/usr/bin/env python3
"""Checks the source tree against the rules of docs/architecture.md:

1. Includes follow the dependency graph: a folder includes only its own headers and those of the
   folders it may depend on (DEPENDS below, DESIGN's rules).
2. No function longer than 150 lines and no source file longer than 800 lines (tests, generated
   code and tables excepted).

Prints every violation with its file and line; exits 1 if there is any. Usage:
  check-structure.py [SOURCE_DIR]
"""
import os
import re
import sys

# folder -> folders it may include (besides itself). Generated protobuf headers live under proto/.
DEPENDS = {
    "base": set(),
    "proto": set(),
    "kernels": {"base"},
    "storage": {"base", "proto"},
    "engine": {"base", "kernels", "storage", "proto"},
    "runtime": {"base", "kernels", "storage", "proto", "engine"},
    "config": {"base", "proto"},
    "packer": {"base", "kernels", "storage", "proto", "engine", "runtime"},
    "daemon": {"base", "kernels", "storage", "proto", "engine", "runtime", "config"},
    "client": {"base", "proto", "config"},
    # Benchmarks and tests may use any module; they are not part of the graph.
}
SOURCE_EXT = (".cc", ".h")
MAX_FUNCTION_LINES = 150
MAX_FILE_LINES = 800
# Not subject to the size limits: tests, generated code and tables.
SIZE_EXEMPT = re.compile(r"^(tests/|build/)|(_tables?\.inc|\.pb\.(h|cc))$")


def strip_code(text):
    """Blanks comments, string and character literals (keeping newlines) so braces can be counted."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == 'R' and text.startswith('R"', i):
            m = re.match(r'R"([^(]*)\(', text[i:])
            if m:
                end = text.find(")" + m.group(1) + '"', i)
                end = n if end < 0 else end + len(m.group(1)) + 2
                out.append(re.sub(r"[^\n]", " ", text[i:end]))
                i = end
            else:
                out.append(c)
                i += 1
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(" " * (min(j + 1, n) - i))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(code):
    """Yields (name, first_line, last_line) of function bodies at namespace or class scope."""
    # A body starts at a '{' whose preceding text (since the last ';', '{' or '}') looks like a
    # function head: an identifier followed by a parameter list, optionally qualifiers.
    head_re = re.compile(
        r"([~\w:<>]+|operator\s*[^\s(]+)\s*\([^;{}]*\)\s*(const|noexcept|override|final|"
        r"->\s*[\w:<>&*, ]+|\s|[A-Z_]+\([^)]*\)|&|mutable)*(:[^;{}]*)?$",
        re.S,
    )
    stack = []  # (kind, start_line, name)
    line = 1
    seg_start = 0
    for i, c in enumerate(code):
        if c == "\n":
            line += 1
        elif c == "{":
            head = code[seg_start:i].strip()
            kind, name = "block", None
            m = head_re.search(head)
            in_function = any(k == "function" for k, _, _ in stack)
            if (m and not in_function and not re.match(r"^(if|for|while|switch|catch)\b", m.group(1))
                    and not re.search(r"\b(class|struct|namespace|enum|union)\b[^()]*$", head)):
                kind, name = "function", m.group(1)
            stack.append((kind, line, name))
            seg_start = i + 1
        elif c == "}":
            if stack:
                kind, start, name = stack.pop()
                if kind == "function":
                    yield name, start, line
            seg_start = i + 1
        elif c == ";":
            seg_start = i + 1


def check(root):
    problems = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir.startswith(("build", ".git", "node_modules")):
            dirnames[:] = []
            continue
        for f in filenames:
            if not f.endswith(SOURCE_EXT):
                continue
            rel = os.path.normpath(os.path.join(rel_dir, f))
            top = rel.split(os.sep)[0]
            with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            if top in DEPENDS:
                allowed = DEPENDS[top] | {top}
                for n, l in enumerate(text.splitlines(), 1):
                    m = re.match(r'\s*#\s*include\s+"([^/"]+)/', l)
                    if m and m.group(1) in DEPENDS and m.group(1) not in allowed:
                        problems.append(f"{rel}:{n}: {top}/ may not include {m.group(1)}/ "
                                        f"(allowed: {', '.join(sorted(allowed))})")
            if SIZE_EXEMPT.search(rel):
                continue
            lines = text.count("\n") + 1
            if lines > MAX_FILE_LINES:
                problems.append(f"{rel}: {lines} lines (at most {MAX_FILE_LINES})")
            for name, first, last in functions(strip_code(text)):
                length = last - first + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{rel}:{first}: function {name} is {length} lines "
                                    f"(at most {MAX_FUNCTION_LINES})")
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    problems = check(os.path.abspath(root))
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} structure problem(s)")
        return 1
    print("structure: includes follow the dependency rules; functions <= 150 lines, files <= 800")
    return 0


if __name__ == "__main__":
    sys.exit(main())
