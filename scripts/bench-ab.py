#!/usr/bin/env python3
"""Compares two builds of dcomp in one run, alternating them: A, B, A, B, ... (N rounds), and
prints the median of each side and the ratio B/A. Two measurements:

  decode   bench/decode_bench (stories3M W8A8, pp128 and tg128 at 1 and 2 threads: tokens/s)
  serve    `dcomp generate MODEL.dcm --budget B --ctx 512 --direct -n N` (decode tokens/s)

Usage:
  bench-ab.py decode OLD_BUILD NEW_BUILD [--rounds 5]
  bench-ab.py serve OLD_BUILD NEW_BUILD --model M.dcm [--budget 600MiB] [--tokens 8] [--rounds 5]
A build is a build folder (e.g. build/release of each checkout).
"""
import argparse
import json
import statistics
import subprocess
import sys


def run_decode(build):
    out = subprocess.run([f"{build}/bench/decode_bench", "--benchmark_min_time=1",
                          "--benchmark_format=json"], check=True, capture_output=True, text=True)
    res = {}
    for b in json.loads(out.stdout)["benchmarks"]:
        res[b["label"] + " t" + str(b["name"].split("threads:")[1].split("/")[0]) + " tok/s"] = b["tok/s"]
    return res


def run_serve(build, a):
    cmd = [f"{build}/packer/dcomp", "generate", a.model, "--prompt", "Once upon a time", "-n",
           str(a.tokens), "--ctx", "512", "--budget", a.budget, "--direct", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    d = json.loads(out.stdout)
    return {f"generate {a.budget} tok/s": d["decode_tokens_per_second"]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["decode", "serve"])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model")
    p.add_argument("--budget", default="600MiB")
    p.add_argument("--tokens", type=int, default=8)
    a = p.parse_args()
    runs = {"old": [], "new": []}
    for r in range(a.rounds):
        for side in ("old", "new"):
            build = a.old if side == "old" else a.new
            res = run_decode(build) if a.what == "decode" else run_serve(build, a)
            runs[side].append(res)
            print(f"round {r + 1} {side}: " +
                  ", ".join(f"{k} {v:.2f}" for k, v in res.items()), file=sys.stderr, flush=True)
    print(f"{'measurement':<40} {'old (median)':>14} {'new (median)':>14} {'new/old':>8}")
    for key in runs["old"][0]:
        o = statistics.median(x[key] for x in runs["old"])
        n = statistics.median(x[key] for x in runs["new"])
        print(f"{key:<40} {o:>14.2f} {n:>14.2f} {n / o:>8.3f}")


if __name__ == "__main__":
    main()
