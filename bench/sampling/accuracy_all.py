"""Run accuracy.py for each Python x config and print a markdown table.

python bench/sampling/accuracy_all.py [--python 3.12.1 --python 3.13.0] [--json OUT]
"""
import argparse
import json
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = [("100", "nogil", True), ("100", "nogil", False), ("1000", "nogil", True),
           ("100", "snap", True), ("1000", "snap", True),
           ("100", "gil", True), ("1000", "gil", True)]

ap = argparse.ArgumentParser()
ap.add_argument("--python", action="append", default=[])
ap.add_argument("--json")
a = ap.parse_args()
root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
rows = []
print("| python | mode | rate | jitter | split Hz | split truth a/b/c % | split sampled a/b/c % | "
      "main holds GIL % | sleeper waiting % | sleeper top CALL % | pulse Hz | pulse truth % | "
      "pulse sampled % | torn (split+pulse) | read fails |")
print("|" + "---|" * 15)
for v in a.python or ["3.12.1", "3.13.0"]:
    py = os.path.join(root, "versions", v, "bin", "python3")
    for rate, mode, jit in CONFIGS:
        cmd = [py, str(HERE / "accuracy.py"), "--rate", rate, "--mode", mode]
        if not jit:
            cmd.append("--no-jitter")
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        rows.append(r)
        s, sl, p = r["split"], r["sleep"], r["pulse"]
        f = lambda d: "/".join(f"{d[k]:.1f}" for k in "abc")  # noqa: E731
        print(f"| {r['python']} | {mode} | {rate} | {'yes' if jit else 'no'} | "
              f"{s['achieved_hz']:.0f} | "
              f"{f(s['truth_pct'])} | {f(s['sampled_pct'])} | {s['main_holds_gil_pct']} | "
              f"{sl['waiting_pct']} | {sl['top_call_pct']} | {p['achieved_hz']:.0f} | "
              f"{p['truth_pct']} | "
              f"{p['sampled_pct']} | {s['torn']}+{p['torn']} | {s['read_fail']}+{p['read_fail']} |",
              flush=True)
if a.json:
    json.dump(rows, open(a.json, "w"), indent=1)
