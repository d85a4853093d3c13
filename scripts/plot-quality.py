#!/usr/bin/env python3
"""Perplexity against size: dcomp packs beside llama.cpp's quantization types (a PNG and a table).

    scripts/plot-quality.py --reference reference_ppl_dev.json --f32-ppl 2.9069 \
        --dcomp a.inspect.json a.eval.json [--dcomp b.inspect.json b.eval.json ...] --out q.png

Each dcomp point is a pack's `dcomp inspect FILE --json` (params, ram_bytes, stored_bytes) and its
`dcomp eval FILE --text ... --json` (ppl). bits/weight = 8 x bytes / params, packed (RAM) and
stored (flash); llama.cpp's types are placed at the bits_per_weight of the reference file. Prints
a markdown table: each dcomp point, and the best llama.cpp type of equal or smaller size.
Needs python3-matplotlib (Debian) for the PNG only.
"""
import argparse
import json
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, help="llama.cpp reference_ppl_dev.json")
    ap.add_argument("--f32-ppl", type=float, required=True, help="f32 perplexity (dcomp eval)")
    ap.add_argument("--dcomp", nargs=2, action="append", default=[],
                    metavar=("INSPECT_JSON", "EVAL_JSON"))
    ap.add_argument("--out", help="PNG to write")
    a = ap.parse_args()

    ref = load(a.reference)
    llama = sorted((v["bits_per_weight"], v["ppl"], k.replace("stories3M-", "").replace(".gguf", ""))
                   for k, v in ref.items())
    points = []
    for ins, ev in a.dcomp:
        i, e = load(ins), load(ev)
        params = float(i["params"])
        points.append((8 * float(i["ram_bytes"]) / params, 8 * float(i["stored_bytes"]) / params,
                       float(e["ppl"]), ins))
    points.sort()

    print("| packed bits/w | stored bits/w | ppl | vs f32 | best llama.cpp type of equal or smaller"
          " size (packed) |")
    print("|---|---|---|---|---|")
    for ram, stored, ppl, _ in points:
        smaller = [l for l in llama if l[0] <= ram]
        best = min(smaller, key=lambda l: l[1]) if smaller else None
        vs = "%+.2f%%" % (100 * (ppl / a.f32_ppl - 1))
        b = "%s %.2f bits: %.4f (%+.2f%%)%s" % (
            best[2], best[0], best[1], 100 * (best[1] / a.f32_ppl - 1),
            "" if ppl < best[1] else " **dcomp worse**") if best else "none"
        print("| %.3f | %.3f | %.4f | %s | %s |" % (ram, stored, ppl, vs, b))

    if not a.out:
        return 0
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot-quality: python3-matplotlib is not installed; no PNG written", file=sys.stderr)
        return 1
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    ax.scatter([l[0] for l in llama], [l[1] for l in llama], marker="x", color="tab:gray",
               label="llama.cpp types (reference_ppl_dev.json)")
    for bits, ppl, name in llama:
        ax.annotate(name, (bits, ppl), fontsize=6, color="tab:gray", xytext=(3, 2),
                    textcoords="offset points")
    ax.plot([p[0] for p in points], [p[2] for p in points], "o-", color="tab:blue",
            label="dcomp pack, packed in RAM")
    ax.plot([p[1] for p in points], [p[2] for p in points], "s--", color="tab:orange",
            label="dcomp pack, stored on flash")
    ax.axhline(a.f32_ppl, color="black", linewidth=0.8, linestyle=":", label="f32")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("perplexity (stories3M, dev text, ctx 512)")
    left = min([4.5] + [p[1] - 0.1 for p in points])  # every dcomp point, stored ones too
    ax.set_xlim(left, 9)
    top = max([p[2] for p in points] + [l[1] for l in llama if left <= l[0] <= 9])
    ax.set_ylim(a.f32_ppl * 0.99, top * 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out)
    print("wrote %s" % a.out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
