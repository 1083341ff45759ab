#!/usr/bin/env python3
"""The statistics every tools/compare-*.sh prints: interleaved runs -> a markdown table.

Input: a TSV file of samples, one per line: `CONFIG<TAB>METRIC<TAB>VALUE` (a run of CONFIG gave
VALUE for METRIC; lines starting with # are skipped). A script appends one line per run and
metric as it goes, running the configurations interleaved (run 1 of each, then run 2, ...).

Output (stdout, markdown), the ratios first (the headline), then the runs:
- per configuration and metric: runs, min / median / max, spread ((max-min)/median);
- per ratio asked for (`--ratio [LABEL=]METRIC:A/B`): the ratio of A's median to B's median with a
  bootstrap 95 % confidence interval (resampling each side's runs, 2,000 rounds, fixed seed, so
  the same samples always print the same interval), and a verdict: "ahead" where the interval's
  lower bound is above 1.0, "behind" where its upper bound is below 1.0, else "on par" (and
  none, "no verdict: N run(s)", where a side has fewer than 3 runs: a check, not a figure). For a
  metric where lower is better (CPU per bit, latency), name it in `--lower-better` and the
  verdict reads the other way. B may name several configurations, `B1|B2|...`: the one with the
  best median for METRIC (highest; lowest where lower is better) is used, and the row names it
  ("the best peer"). LABEL (e.g. "headline", "extra: --sendfile") heads the row; rows print in
  the order given, so a script lists the defaults-against-defaults rows first;
- the load average before and after (`--load-before`, `--load-after`, from /proc/loadavg), and
  the word "noisy" where it rose above 1.5 or a configuration's spread exceeds 30 %.

  tools/stats.py results.tsv --ratio goodput:nc/iperf3 --lower-better cpu_per_gbit \
      --load-before 0.4 --load-after 1.1
  tools/stats.py --self-test
"""

import argparse
import random
import statistics
import sys

NOISY_LOAD = 1.5
NOISY_SPREAD = 0.30
MIN_RUNS = 3  # fewer runs on either side: the interval is printed, no verdict
ROUNDS = 2000


def read_samples(path):
    """{(config, metric): [values]} in the order the file gives them."""
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                sys.exit(f"stats.py: {path}:{n}: expected CONFIG<TAB>METRIC<TAB>VALUE, got {line!r}")
            try:
                value = float(parts[2])
            except ValueError:
                sys.exit(f"stats.py: {path}:{n}: not a number: {parts[2]!r}")
            out.setdefault((parts[0], parts[1]), []).append(value)
    return out


def spread(values):
    """(max - min) / median; infinite where the median is 0 but the runs differ (a count of
    lost datagrams that is 0 in most runs and thousands in one is not "0 %")."""
    med = statistics.median(values)
    width = max(values) - min(values)
    if not med:
        return float("inf") if width else 0.0
    return width / med


def ratio_ci(a, b, rounds=ROUNDS, seed=1):
    """Median(a)/median(b) and its bootstrap 95 % interval (percentile method)."""
    rng = random.Random(seed)
    point = statistics.median(a) / statistics.median(b)
    ratios = []
    for _ in range(rounds):
        ma = statistics.median(rng.choices(a, k=len(a)))
        mb = statistics.median(rng.choices(b, k=len(b)))
        if mb:
            ratios.append(ma / mb)
    ratios.sort()
    lo = ratios[int(0.025 * (len(ratios) - 1))]
    hi = ratios[int(0.975 * (len(ratios) - 1))]
    return point, lo, hi


def verdict(lo, hi, lower_better=False):
    if lo > 1.0:
        return "behind" if lower_better else "ahead"
    if hi < 1.0:
        return "ahead" if lower_better else "behind"
    return "on par"


def fmt(v):
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.4g}"


def table_of_runs(samples):
    lines = ["| configuration | metric | runs | min | median | max | spread |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for (config, metric), vals in samples.items():
        s = spread(vals)
        mark = " (noisy)" if s > NOISY_SPREAD else ""
        shown = "n/a: median 0" if s == float("inf") else f"{s:.0%}"
        lines.append(f"| {config} | {metric} | {len(vals)} | {fmt(min(vals))} | "
                     f"{fmt(statistics.median(vals))} | {fmt(max(vals))} | {shown}{mark} |")
    return lines


def parse_ratio(spec):
    """[LABEL=]METRIC:A/B1|B2|... -> (label, metric, a, [b...])."""
    label, eq, rest = spec.partition("=")
    if not eq:
        label, rest = "", spec
    metric, _, pair = rest.partition(":")
    a, _, b = pair.partition("/")
    bs = [x for x in b.split("|") if x]
    if not (metric and a and bs):
        sys.exit(f"stats.py: --ratio wants [LABEL=]METRIC:A/B or METRIC:A/B1|B2, got {spec!r}")
    return label, metric, a, bs


def best_of(samples, metric, configs, lower_better):
    """The configuration among `configs` with the best median for `metric` (None if none ran)."""
    ran = [c for c in configs if samples.get((c, metric))]
    if not ran:
        return None
    pick = min if lower_better else max
    return pick(ran, key=lambda c: statistics.median(samples[(c, metric)]))


def table_of_ratios(samples, specs, lower_better):
    lines = ["| row | ratio | metric | median ratio | 95 % interval | verdict |",
             "|---|---|---|---:|---|---|"]
    for spec in specs:
        label, metric, a, bs = parse_ratio(spec)
        lb = metric in lower_better
        b = best_of(samples, metric, bs, lb) or "|".join(bs)
        va, vb = samples.get((a, metric)), samples.get((b, metric))
        if not va or not vb:
            lines.append(f"| {label} | {a} / {b} | {metric} | n/a | n/a | missing runs |")
            continue
        if not statistics.median(vb):
            lines.append(f"| {label} | {a} / {b} | {metric} | n/a | n/a | {b}'s median is 0 |")
            continue
        point, lo, hi = ratio_ci(va, vb)
        runs = min(len(va), len(vb))
        v = verdict(lo, hi, lb) if runs >= MIN_RUNS else f"no verdict: {runs} run(s)"
        row = f"| {label} | {a} / {b} | {metric} | {point:.2f}x | {lo:.2f}x - {hi:.2f}x | {v} |"
        # "nc / the best of several" is the same row as "nc / X" when X was the best: once.
        if row not in lines:
            lines.append(row)
    return lines


def noise_line(samples, before, after):
    words = []
    if before is not None and after is not None:
        words.append(f"load average {before:.2f} before, {after:.2f} after")
        if max(before, after) > NOISY_LOAD:
            words.append(f"noisy: the load average rose above {NOISY_LOAD}")
    wide = sorted({c for (c, _), v in samples.items() if spread(v) > NOISY_SPREAD})
    if wide:
        words.append("noisy: spread over 30 % for " + ", ".join(wide))
    return "; ".join(words) if words else "quiet"


def self_test():
    a = [10.0, 10.2, 9.9, 10.1, 10.0]
    b = [5.0, 5.1, 4.9, 5.0, 5.05]
    point, lo, hi = ratio_ci(a, b)
    assert 1.9 < lo <= point <= hi < 2.1, (point, lo, hi)
    assert verdict(lo, hi) == "ahead" and verdict(lo, hi, lower_better=True) == "behind"
    same = ratio_ci(a, list(a))
    assert same[1] <= 1.0 <= same[2] and verdict(same[1], same[2]) == "on par"
    assert ratio_ci(a, b) == ratio_ci(a, b), "the same samples give the same interval"
    assert abs(spread([8.0, 10.0, 12.0]) - 0.4) < 1e-9
    assert spread([0.0, 0.0, 5.0]) == float("inf") and spread([0.0, 0.0]) == 0.0
    assert "n/a: median 0 (noisy)" in table_of_runs({("x", "lost"): [0.0, 0.0, 5.0]})[2]
    assert "noisy" in noise_line({("x", "m"): [1.0, 2.0]}, 0.1, 0.2)
    assert noise_line({("x", "m"): [1.0, 1.01]}, 2.0, 0.2).startswith("load average")
    assert noise_line({("x", "m"): [1.0, 1.01]}, None, None) == "quiet"
    assert parse_ratio("headline=gbps:nc/p1|p2") == ("headline", "gbps", "nc", ["p1", "p2"])
    assert parse_ratio("gbps:nc/p1") == ("", "gbps", "nc", ["p1"])
    s = {("p1", "gbps"): [1.0, 2.0, 3.0], ("p2", "gbps"): [4.0, 5.0], ("nc", "gbps"): [5.0]}
    assert best_of(s, "gbps", ["p1", "p2", "p3"], False) == "p2"
    assert best_of(s, "gbps", ["p1", "p2"], True) == "p1"
    assert best_of(s, "gbps", ["p3"], False) is None
    rows = table_of_ratios(s, ["headline=gbps:nc/p1|p2", "gbps:nc/p3"], set())
    assert rows[2].startswith("| headline | nc / p2 | gbps | 1.11x"), rows
    assert "no verdict: 1 run(s)" in rows[2], rows
    s[("nc", "gbps")] = [5.0, 5.5, 4.5]
    s[("p2", "gbps")] = [4.0, 5.0, 4.5]
    assert "on par" in table_of_ratios(s, ["gbps:nc/p2"], set())[2]
    assert "missing runs" in rows[3], rows
    once = table_of_ratios(s, ["gbps:nc/p1|p2", "gbps:nc/p2"], set())
    assert len(once) == 3, once
    print("stats.py self-test: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tsv", nargs="?")
    ap.add_argument("--ratio", action="append", default=[], help="METRIC:A/B (repeatable)")
    ap.add_argument("--lower-better", action="append", default=[], help="a metric where lower is better")
    ap.add_argument("--load-before", type=float)
    ap.add_argument("--load-after", type=float)
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not args.tsv:
        ap.error("a TSV file of samples is needed (or --self-test)")
    samples = read_samples(args.tsv)
    if not samples:
        sys.exit(f"stats.py: {args.tsv}: no samples")
    out = []
    if args.ratio:
        out += table_of_ratios(samples, args.ratio, set(args.lower_better)) + [""]
    out += table_of_runs(samples)
    out += ["", noise_line(samples, args.load_before, args.load_after)]
    print("\n".join(out))


if __name__ == "__main__":
    main()
