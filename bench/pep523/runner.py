"""runner.py MODE WORKLOAD: install one _floor mode (or none), then run WORKLOAD as __main__.

MODE is none, profile_empty, profile_record, pep523_empty or pep523_record. _floor is
imported from bench/.venvs/pep523-build/ (see build.sh). With FLOOR_VERBOSE=1 the number of
records written is printed to stderr at the end.
"""

import os
import runpy
import sys

mode, workload = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".venvs", "pep523-build"))
import _floor  # noqa: E402

sys.argv = [workload]
if mode != "none":
    _floor.install(mode)
try:
    runpy.run_path(workload, run_name="__main__")
finally:
    if mode != "none":
        _floor.uninstall()
    if os.environ.get("FLOOR_VERBOSE"):
        print(f"{mode}: {_floor.count()} records", file=sys.stderr)
