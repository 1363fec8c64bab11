"""Format version 1 files still decode as they did: tests/data/v1-*.ftrace, written by the last
version 1 writer, against what both readers of that time made of them (tests/data/
v1-expected.json, recorded by tests/v1data.py)."""

from __future__ import annotations

import json
import os

import pytest

from v1data import DATA, EXPECTED, SAMPLED, TRACE, views

with open(os.path.join(DATA, EXPECTED)) as _f:
    RECORDED = json.load(_f)


@pytest.mark.parametrize("name", [TRACE, SAMPLED])
def test_v1_file_decodes_as_recorded(name):
    got = views(os.path.join(DATA, name))  # and both readers agree
    want = RECORDED[name]
    assert got["header"]["format_version"] == 1
    # what was recorded is unchanged; keys added since (to the header, to the views) have
    # their version 1 values
    assert {k: got["header"][k] for k in want["header"]} == want["header"]
    for key in want:
        if key != "header":
            assert got[key] == want[key], key
    assert (got["header"]["series_index"], got["header"]["series_id"],
            got["header"]["origin"]) == (0, 0, "capture")
    assert got["gaps"] == [] and got["hook_lost"] == []


def test_v1_files_cover_what_they_should():
    trace, sampled = RECORDED[TRACE], RECORDED[SAMPLED]
    assert trace["header"]["mode"] == "trace" and trace["header"]["c_calls"]
    assert len(trace["threads"]) >= 3 and trace["complete"]
    assert any(e[0] == "c_call" for e in trace["events"])
    assert any(e[4] for e in trace["events"])  # synthetic calls from a STACK record
    assert sampled["header"]["mode"] == "sample" and len(sampled["samples"]) > 10
