#!/usr/bin/env python3
"""Speed against memory: `dcomp generate` tokens/s at RAM budgets given as percentages of the INT8
size (the adaptive controller), each relative to `--policy all-decoded` run right before it (the
two sides alternated, ROUNDS rounds: the median of the per-round ratios and their range), plus
`--policy all-packed`. No cgroup; O_DIRECT reads, so what does not fit in RAM is read from the
device every token. The read GB/s is the median over rounds; the tiers and staging buffers are the
last round's, and the rounds whose controller re-planned while generating are counted.

  scripts/bench-budgets.py MODEL.dcm [--budgets 100,90,80,75,70,60,50] [-n 64] [--rounds 2]

Set DCOMP_KERNELS=avx2 DCOMP_RANS=avx2 to pin the matrix kernels and the rANS decoder to the AVX2
class (each names its own variants; see docs/architecture.md). Prints one markdown table row per
budget."""
import argparse, json, os, statistics, subprocess, sys

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--budgets", default="100,90,80,75,70,60,50")
ap.add_argument("-n", type=int, default=64)
ap.add_argument("--ctx", type=int, default=512)
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--dcomp", default=os.path.join(os.path.dirname(__file__), "../build/release/packer/dcomp"))
a = ap.parse_args()


def run(*extra):
    out = subprocess.run([a.dcomp, "generate", a.model, "--prompt", "Once upon a time", "-n", str(a.n),
                          "--ctx", str(a.ctx), "--direct", "--json", *extra],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    d = json.loads(out.stdout)
    r = d["runtime"]
    tiers = r["plan"]["tiers"]
    wall = d["prefill_seconds"] + d["generated_tokens"] / max(d["decode_tokens_per_second"], 1e-9)
    return {"tps": d["decode_tokens_per_second"],
            "read_gbs": r["runtime"]["flash_bytes"] / wall / 1e9 if wall > 0 else 0,
            "tiers": {t: tiers.count(t) for t in sorted(set(tiers))},
            "head": r["plan"].get("flash_head_matrices", 0),
            "staging": r["plan"].get("staging", 0),
            "replans": r["runtime"].get("replans", 0),
            "rss": r["memory"]["peak_rss"]}


def median(xs):
    return statistics.median(xs) if xs else float("nan")


print(f"# {a.model}, -n {a.n}, --ctx {a.ctx}, {a.rounds} rounds alternated, "
      f"kernels {os.environ.get('DCOMP_KERNELS', 'auto')}, "
      f"rANS {os.environ.get('DCOMP_RANS', 'auto')}")
print("| budget | all-decoded tok/s | adaptive tok/s | adaptive / all-decoded | per round | read GB/s | tiers (head: matrices of each flash layer held packed; staging buffers) | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
for pct in ["packed"] + a.budgets.split(","):
    ref, got, ratios, reads, plans = [], [], [], [], []
    replanned = 0  # rounds whose controller switched plans while generating
    last = None
    for _ in range(a.rounds):
        d = run("--policy", "all-decoded")
        g = run("--policy", "all-packed") if pct == "packed" else run("--budget", pct + "%")
        if d: ref.append(d["tps"])
        if g:
            got.append(g["tps"])
            reads.append(g["read_gbs"])
            plans.append((g["tiers"], g["head"], g["staging"]))
            replanned += g["replans"] > 0
            last = g
        if d and g: ratios.append(g["tps"] / d["tps"])
    if last is None:
        print(f"| {pct} | {median(ref):.2f} | does not fit | | | | | |")
        continue
    name = "all-packed" if pct == "packed" else pct + "%"
    # Each round's ratio (the run over its all-decoded partner) shows how much the machine moved.
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else ""
    varied = " (plans varied)" if len(set(str(p) for p in plans)) > 1 else ""
    if replanned:
        varied += f" (re-planned in {replanned} of {len(plans)} rounds)"
    ratio = median(ratios) if ratios else median(got) / median(ref)
    print(f"| {name} | {median(ref):.2f} | {median(got):.2f} | {ratio:.2f}x | "
          f"{spread} | {median(reads):.2f} | {last['tiers']}"
          f"{', head ' + str(last['head']) if last['head'] else ''}"
          f"{', staging ' + str(last['staging']) if last['staging'] else ''}{varied} | "
          f"{last['rss'] / 2**20:.0f} |")
    sys.stdout.flush()
