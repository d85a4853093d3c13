#!/usr/bin/env python3
"""Pack settings tuned on one half of a text and checked on the other, over several calibration
seeds (the protocol of BENCHMARKS.md's quality sections).

The text's stories (separated by <|endoftext|>; `dcomp eval` skips the first piece as a partial
story) are split in two: half A, the first half of the stories, to tune on (and its two quarters
A1, A2), and half B, the rest, to check. For every calibration size T, budget P and seed S,
`dcomp pack MODEL --calib-tokens T --max-ppl-increase P --calib-seed S`, then `dcomp inspect` and
`dcomp eval --ctx CTX` on A, A1, A2 and B against the f32 model on the same text. Prints one
markdown row per (T, P): means over the seeds, B and the worst quarter of A per seed.

  scripts/quality-halves.py MODEL --text DEV.txt [--tokens 4096,16384] [--budgets 1.0,1.1,1.2]
      [--seeds 20240601,1,2] [--out DIR] [--pack-args "..."]

Packs and JSON files go to DIR (default quality-halves-out/); a pack already there is reused.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

SEP = "<|endoftext|>"

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--text", required=True)
ap.add_argument("--tokens", default="4096")
ap.add_argument("--budgets", default="1.0")
ap.add_argument("--seeds", default="20240601,1,2")
ap.add_argument("--ctx", type=int, default=512)
ap.add_argument("--out", default="quality-halves-out")
ap.add_argument("--pack-args", default="", help="more `dcomp pack` options, one string")
ap.add_argument("--dcomp", default=os.path.join(os.path.dirname(__file__), "../build/release/packer/dcomp"))
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)


def run(args, what):
    r = subprocess.run([a.dcomp, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{what} failed (exit {r.returncode}): {' '.join(args)}\n{r.stderr.strip()}")
    return r.stdout


def split_text():
    with open(a.text) as f:
        pieces = f.read().split(SEP)
    stories = len(pieces) - 1  # the first piece is skipped by eval
    if stories < 4:
        sys.exit(f"{a.text}: {stories} stories separated by {SEP}; expected at least 4")
    half = (stories + 1) // 2
    quarter = (half + 1) // 2
    # A piece list [i, j) scores pieces i+1 .. j-1; each part starts with the piece before its own.
    parts = {"A": (0, half + 1), "A1": (0, quarter + 1), "A2": (quarter, half + 1),
             "B": (half, len(pieces))}
    paths = {}
    for name, (i, j) in parts.items():
        paths[name] = os.path.join(a.out, f"{name}.txt")
        with open(paths[name], "w") as f:
            f.write(SEP.join(pieces[i:j]))
    return paths


def mean_nll(model, text, extra=()):
    return json.loads(run(["eval", model, "--text", text, "--ctx", str(a.ctx), "--json", *extra],
                          "eval"))["mean_nll"]


texts = split_text()
f32 = {h: mean_nll(a.model, p, ("--weights", "f32")) for h, p in texts.items()}
print(f"# {a.model}, text {a.text}, --ctx {a.ctx}; f32 ppl "
      + ", ".join(f"{h} {math.exp(v):.4f}" for h, v in f32.items()))
print("| T | P | seeds | pack wall s | packed bits/w | stored | A | A1 | A2 | B (the check) "
      "| B per seed | worst quarter of A per seed |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for t in a.tokens.split(","):
    for p in a.budgets.split(","):
        rows = []
        for s in a.seeds.split(","):
            dcm = os.path.join(a.out, f"t{t}_p{p}_s{s}.dcm")
            wall = float("nan")
            if not os.path.exists(dcm):
                t0 = time.monotonic()
                run(["pack", a.model, dcm, "--quiet", "--calib-tokens", t, "--max-ppl-increase", p,
                     "--calib-seed", s, *a.pack_args.split()], "pack")
                wall = time.monotonic() - t0
            info = json.loads(run(["inspect", dcm, "--json"], "inspect"))
            row = {"wall": wall, "packed": 8 * info["ram_bytes"] / info["params"],
                   "stored": 8 * info["stored_bytes"] / info["params"]}
            for h, path in texts.items():
                row[h] = 100 * (math.exp(mean_nll(dcm, path) - f32[h]) - 1)
            rows.append(row)

        def m(k):
            return statistics.mean(r[k] for r in rows)

        wall = "reused" if any(math.isnan(r["wall"]) for r in rows) else f"{m('wall'):.0f}"
        print(f"| {t} | {p} | {len(rows)} | {wall} | {m('packed'):.3f} | {m('stored'):.3f} "
              f"| {m('A'):+.2f}% | {m('A1'):+.2f}% | {m('A2'):+.2f}% | {m('B'):+.2f}% | "
              + " / ".join(f"{r['B']:+.2f}" for r in rows) + " | "
              + " / ".join(f"{max(r['A1'], r['A2']):+.2f}" for r in rows) + " |", flush=True)
