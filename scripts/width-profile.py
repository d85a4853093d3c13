#!/usr/bin/env python3
"""Per matrix role, the code width and code entropy a `dcomp pack` chose: the width holding most of
the role's weights (the wider on a tie) and the parameter-weighted mean entropy (bits per weight)
of the role's tensors at that width, with the histogram of widths by weights; per role of a
layer, each layer's width and entropy; and for a tensor split into groups of rows, each group's
width and entropy. Reads the tensor table and the groups
lines `dcomp pack` prints (its log); the profile is what `dcomp synth --widths stories3m` draws
(packer/synth.cc: kStories3MLayers, kStories3MGroups).

usage: scripts/width-profile.py PACK.log
"""
import collections
import re
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rows = []
    groups = {}  # name -> (rows, group_rows, [bits], [entropy])
    in_table = False
    group_line = re.compile(r"(\S+): (\d+) rows in \d+ groups of (\d+), bits ([\d ]+), H/w ([\d. ]+)$")
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            g = group_line.match(line.strip())
            if g:
                groups[g[1]] = (int(g[2]), int(g[3]), [int(b) for b in g[4].split()],
                                [float(h) for h in g[5].split()])
                continue
            if line.startswith("tensor "):
                in_table = True
                continue
            if not in_table:
                continue
            if line.startswith("total"):
                break
            fields = line.split()
            # name params int8_B stored_B ratio codec alpha bits prune out_err H/w
            if len(fields) < 11 or not re.fullmatch(r"[0-9]", fields[7]):
                continue
            name, params, bits, entropy = fields[0], int(fields[1]), int(fields[7]), float(fields[-1])
            role = name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]
            rows.append((role, name, params, bits, entropy))
    if not rows:
        sys.exit(f"{sys.argv[1]}: no tensor table (the log of `dcomp pack` without --quiet)")
    by_role = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0.0]))
    hist = collections.Counter()
    # A grouped tensor counts each group at its own width (the table's bits are the widest).
    parts = []
    for role, name, params, bits, entropy in rows:
        if name not in groups:
            parts.append((role, params, bits, entropy))
            continue
        n, per, gbits, gent = groups[name]
        for k, (b, h) in enumerate(zip(gbits, gent)):
            parts.append((role, params // n * min(per, n - k * per), b, h))
    for role, params, bits, entropy in parts:
        by_role[role][bits][0] += params
        by_role[role][bits][1] += params * entropy
        hist[bits] += params
    total = sum(hist.values())
    print("role            width  entropy  weights by width")
    for role, widths in by_role.items():
        bits = max(widths, key=lambda b: (widths[b][0], b))  # a tie: the wider
        n, h = widths[bits]
        spread = ", ".join(f"{b}: {widths[b][0]}" for b in sorted(widths))
        print(f"{role:<15} {bits:>5}  {h / n:7.2f}  {spread}")
    print("all roles: " + ", ".join(f"{b} bits {100 * hist[b] / total:.1f}%" for b in sorted(hist)))
    by_layer = collections.defaultdict(list)  # role -> [(layer, bits, entropy)]
    for role, name, params, bits, entropy in rows:
        if name.startswith("blk."):
            by_layer[role].append((int(name.split(".")[1]), bits, entropy))
    for role, layers in by_layer.items():
        layers.sort()
        print(f"{role} by layer: bits " + ", ".join(str(b) for _, b, _ in layers) +
              "; entropy " + ", ".join(f"{h:.3f}" for _, _, h in layers))
    for name, (n, per, gbits, gent) in groups.items():
        print(f"{name}: {n} rows in {len(gbits)} groups of {per}")
        print("  bits " + ", ".join(str(b) for b in gbits))
        print("  entropy " + ", ".join(f"{h:.3f}" for h in gent))


if __name__ == "__main__":
    main()
