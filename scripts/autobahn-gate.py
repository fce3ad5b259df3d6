#!/usr/bin/env python3
"""Fail unless every Autobahn case of AGENT is OK or INFORMATIONAL, both by
behavior and by behaviorClose (NON-STRICT and UNIMPLEMENTED count as failures).

usage: autobahn-gate.py AGENT [--index PATH] [--expect N]
"""
import argparse
import json
import sys
from collections import Counter

GOOD = {"OK", "INFORMATIONAL"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("agent")
    ap.add_argument("--index", default="/tmp/autobahn/reports/clients/index.json")
    ap.add_argument("--expect", type=int, help="number of cases that must have run")
    a = ap.parse_args()
    with open(a.index) as f:
        cases = json.load(f).get(a.agent)
    if not cases:
        print(f"autobahn: no cases for agent {a.agent!r}", file=sys.stderr)
        return 1
    beh = Counter(c["behavior"] for c in cases.values())
    close = Counter(c["behaviorClose"] for c in cases.values())
    print(f"autobahn {a.agent}: {len(cases)} cases")
    print(f"  behavior:      {dict(sorted(beh.items()))}")
    print(f"  behaviorClose: {dict(sorted(close.items()))}")
    bad = sorted(k for k, c in cases.items() if c["behavior"] not in GOOD or c["behaviorClose"] not in GOOD)
    for k in bad:
        c = cases[k]
        print(f"  BAD {k}: behavior={c['behavior']} behaviorClose={c['behaviorClose']}")
    if a.expect is not None and len(cases) != a.expect:
        print(f"autobahn: expected {a.expect} cases, got {len(cases)}", file=sys.stderr)
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
