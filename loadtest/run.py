"""Headless Locust run against a running service: prints QPS, p50/p95/p99 and failures, writes CSV and HTML.

    python loadtest/run.py URL USERS SECONDS [DATA_DIR] [--out DIR] [--k-values 10] [--beam-widths 20] ...
    loadtest/run.sh URL USERS SECONDS [DATA_DIR]      # the same

Exits 1 when any request failed (or none was made), 2 on bad arguments. Locust runs as a child
process (it monkey-patches the standard library with gevent; nothing else should share that).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="Base URL of the service, e.g. http://127.0.0.1:8000")
    p.add_argument("users", type=int, help="Concurrent users (each sends requests back to back).")
    p.add_argument("seconds", type=int, help="Run time in seconds.")
    p.add_argument("data_dir", nargs="?", default="demo/data", help="Served catalog's folder (items.jsonl, sequences.jsonl).")
    p.add_argument("--out", type=Path, default=Path("loadtest-out"), help="Where the CSV files and report.html go.")
    p.add_argument("--k-values", default="5,10,20,50")
    p.add_argument("--beam-widths", default="default,20,32")
    p.add_argument("--mix", default="query=35,words=15,history=35,both=15")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.users < 1 or args.seconds < 1:
        p.error("USERS and SECONDS must be at least 1")
    if not (Path(args.data_dir) / "items.jsonl").is_file():
        p.error(f"{args.data_dir}/items.jsonl not found: DATA_DIR is the served catalog's folder")
    return args


def locust_command(args: argparse.Namespace) -> list[str]:
    prefix = args.out / "locust"
    return [
        sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"),
        "--headless", "--host", args.url,
        "--users", str(args.users), "--spawn-rate", str(args.users),  # all users within the first second
        "--run-time", f"{args.seconds}s", "--stop-timeout", "15",
        "--csv", str(prefix), "--html", str(args.out / "report.html"),
        "--only-summary", "--loglevel", "WARNING",
        "--data-dir", str(args.data_dir), "--k-values", args.k_values, "--beam-widths", args.beam_widths,
        "--mix", args.mix, "--seed", str(args.seed),
    ]  # fmt: skip


def read_stats(out: Path) -> tuple[dict, list[dict], list[dict]]:
    """(aggregated row, per-name rows, failure rows) from Locust's CSV files."""
    with open(out / "locust_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    per_name = [r for r in rows if r["Name"] != "Aggregated"]
    failures = []
    if (out / "locust_failures.csv").exists():
        with open(out / "locust_failures.csv", newline="") as f:
            failures = list(csv.DictReader(f))
    return total, per_name, failures


def summary(total: dict, per_name: list[dict], failures: list[dict]) -> str:
    head = f"{'name':<24} {'requests':>9} {'failures':>9} {'QPS':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    lines = [head, "-" * len(head)]
    for r in [*per_name, total]:
        lines.append(f"{r['Name']:<24} {r['Request Count']:>9} {r['Failure Count']:>9} {float(r['Requests/s']):>8.1f} "
                     f"{r['50%']:>8} {r['95%']:>8} {r['99%']:>8}")
    for r in failures[:10]:
        lines.append(f"failure x{r['Occurrences']}: {r['Name']}: {r['Error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(locust_command(args))
    try:
        total, per_name, failures = read_stats(args.out)
    except (FileNotFoundError, StopIteration):
        print(f"locust wrote no statistics (exit status {proc.returncode})", file=sys.stderr)
        return 1
    print(summary(total, per_name, failures))
    requests, failed = int(total["Request Count"]), int(total["Failure Count"])
    print(f"QPS {float(total['Requests/s']):.1f}  p50 {total['50%']} ms  p95 {total['95%']} ms  p99 {total['99%']} ms  "
          f"requests {requests}  failures {failed}  (CSV: {args.out}/locust_stats.csv, HTML: {args.out}/report.html)")
    if requests == 0:
        print("no request was made", file=sys.stderr)
        return 1
    return 1 if failed or proc.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
