#!/usr/bin/env python3
"""Generate the CVSS reference fixtures in fixtures/cvss/ from the PyPI package `cvss`.

Committed for reproducibility; tests and CI never run it (they read the CSV files it wrote).
Regenerate with:

    pip install cvss==3.6
    python3 tools/cvss_reference.py

Every vector is scored by the reference library (Red Hat's `cvss`, which follows FIRST's
specifications and, for v4.0, FIRST's calculator), and written as `vector,base_score,severity`.
The random choices use a fixed seed, so the same library version writes the same files.

- v3.0 and v3.1: every one of the 2,592 base metric combinations, about a third of them with
  random temporal and environmental metrics appended (some of them `X`, some in shuffled order),
  plus extra random vectors.
- v4.0: two vectors for each of the 270 MacroVectors (built group by group), then random
  vectors: base only, with Exploit Maturity (E), with environmental (modified base and security
  requirement) metrics, and with supplemental metrics, some in shuffled order.
"""

import csv
import itertools
import os
import random

import cvss
from cvss import CVSS3, CVSS4
from cvss import constants3, constants4

SEED = 20261123
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "cvss")

V3_BASE = ["AV", "AC", "PR", "UI", "S", "C", "I", "A"]
V3_OPTIONAL = ["E", "RL", "RC", "CR", "IR", "AR", "MAV", "MAC", "MPR", "MUI", "MS", "MC", "MI", "MA"]

V4_BASE = ["AV", "AC", "AT", "PR", "UI", "VC", "VI", "VA", "SC", "SI", "SA"]
V4_ENV = ["CR", "IR", "AR", "MAV", "MAC", "MAT", "MPR", "MUI", "MVC", "MVI", "MVA", "MSC", "MSI", "MSA"]
V4_SUPPLEMENTAL = ["S", "AU", "R", "V", "RE", "U"]


def v3_values(metric):
    return list(constants3.METRICS_VALUE_NAMES[metric].keys())


def v4_values(metric):
    return list(constants4.METRICS_VALUE_NAMES[metric].keys())


def join(prefix, fields, rng, shuffle_ratio):
    fields = list(fields)
    if rng.random() < shuffle_ratio:
        rng.shuffle(fields)
    return prefix + "/".join("{0}:{1}".format(m, v) for m, v in fields)


def v3_optional_fields(rng):
    chosen = [m for m in V3_OPTIONAL if rng.random() < 0.5]
    return [(m, rng.choice(v3_values(m))) for m in chosen]


def v3_rows(minor, rng):
    prefix = "CVSS:3.{0}/".format(minor)
    vectors = []
    # Every base combination: the base score depends on nothing else.
    for combo in itertools.product(*(v3_values(m) for m in V3_BASE)):
        fields = list(zip(V3_BASE, combo))
        if rng.random() < 0.35:
            fields += v3_optional_fields(rng)
        vectors.append(join(prefix, fields, rng, 0.1))
    # Random extra vectors, most with optional metrics.
    for _ in range(500):
        fields = [(m, rng.choice(v3_values(m))) for m in V3_BASE]
        if rng.random() < 0.8:
            fields += v3_optional_fields(rng)
        vectors.append(join(prefix, fields, rng, 0.2))
    rows = []
    for vector in vectors:
        c = CVSS3(vector)
        rows.append((vector, c.scores()[0], c.severities()[0]))
    return rows


def v4_random_fields(rng, kind):
    fields = [(m, rng.choice(v4_values(m))) for m in V4_BASE]
    if kind in ("e", "e_env", "all") or (kind == "env" and rng.random() < 0.3):
        fields.append(("E", rng.choice(v4_values("E"))))
    if kind in ("env", "e_env", "all"):
        for m in V4_ENV:
            if rng.random() < 0.5:
                fields.append((m, rng.choice(v4_values(m))))
    if kind in ("supplemental", "all"):
        for m in V4_SUPPLEMENTAL:
            if rng.random() < 0.6:
                fields.append((m, rng.choice(v4_values(m))))
    return fields


def eq_levels(e):
    """EQ1..EQ6 of effective values, as in the specification's Table 24 (checked by the reference)."""
    if e["AV"] == "N" and e["PR"] == "N" and e["UI"] == "N":
        eq1 = 0
    elif "N" in (e["AV"], e["PR"], e["UI"]) and e["AV"] != "P":
        eq1 = 1
    else:
        eq1 = 2
    eq2 = 0 if e["AC"] == "L" and e["AT"] == "N" else 1
    if e["VC"] == "H" and e["VI"] == "H":
        eq3 = 0
    elif "H" in (e["VC"], e["VI"], e["VA"]):
        eq3 = 1
    else:
        eq3 = 2
    if e["SI"] == "S" or e["SA"] == "S":
        eq4 = 0
    elif "H" in (e["SC"], e["SI"], e["SA"]):
        eq4 = 1
    else:
        eq4 = 2
    eq5 = {"A": 0, "P": 1, "U": 2}[e["E"]]
    eq6 = 0 if any(e[r] == "H" and e[v] == "H" for r, v in (("CR", "VC"), ("IR", "VI"), ("AR", "VA"))) else 1
    return [eq1, eq2, eq3, eq4, eq5, eq6]


def v4_vector_for_macro(macro, rng):
    want = [int(ch) for ch in macro]
    groups = [
        ([0], ["AV", "PR", "UI"]),
        ([1], ["AC", "AT"]),
        ([2, 5], ["VC", "VI", "VA", "CR", "IR", "AR"]),
        ([3], ["SC", "SI", "SA"]),
        ([4], ["E"]),
    ]
    choices = {m: v4_values(m) for m in V4_BASE}
    choices["SI"] = choices["SA"] = ["S", "H", "L", "N"]
    for m in ("E", "CR", "IR", "AR"):
        choices[m] = [v for v in v4_values(m) if v != "X"]
    effective = {}
    for eqs, metrics in groups:
        while True:
            trial = dict(effective)
            trial.update({m: rng.choice(choices[m]) for m in metrics})
            filled = dict(trial)
            for m in ["AV", "PR", "UI", "AC", "AT", "VC", "VI", "VA", "CR", "IR", "AR", "SC", "SI", "SA", "E"]:
                filled.setdefault(m, {"SI": "N", "SA": "N", "SC": "N"}.get(m, choices[m][0]))
            levels = eq_levels(filled)
            if all(levels[i] == want[i] for i in eqs):
                effective = trial
                break
    fields = []
    modified = []
    for m in V4_BASE:
        v = effective[m]
        if v == "S" or rng.random() < 0.25:
            base_value = rng.choice(v4_values(m))
            fields.append((m, base_value))
            modified.append(("M" + m, v))
        else:
            fields.append((m, v))
            if rng.random() < 0.1:
                modified.append(("M" + m, "X"))
    if effective["E"] != "A" or rng.random() < 0.5:
        fields.append(("E", effective["E"]))
    for m in ("CR", "IR", "AR"):
        if effective[m] != "H" or rng.random() < 0.3:
            fields.append((m, effective[m]))
    fields += modified
    return "CVSS:4.0/" + "/".join("{0}:{1}".format(m, v) for m, v in fields)


def v4_rows(rng):
    prefix = "CVSS:4.0/"
    vectors = []
    # Every MacroVector in FIRST's table, twice: each EQ depends on its own group of metrics, so
    # sample each group until it has the wanted level, sometimes through modified metrics.
    for macro in constants4.CVSS_LOOKUP_GLOBAL:
        for _ in range(2):
            vector = v4_vector_for_macro(macro, rng)
            got = CVSS4(vector).macroVector()
            if got != macro:
                raise RuntimeError("{0} gives {1}, wanted {2}".format(vector, got, macro))
            vectors.append(vector)
    # Random vectors by kind.
    plan = [("base", 1200), ("e", 600), ("env", 700), ("e_env", 700), ("supplemental", 200), ("all", 300)]
    for kind, count in plan:
        for _ in range(count):
            vectors.append(join(prefix, v4_random_fields(rng, kind), rng, 0.1))
    # Corner cases: no impact anywhere (0.0), the worst case (10.0), Safety on subsequent systems,
    # unreported exploits, and every modified metric set to X.
    vectors += [
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N",
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H",
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/E:A",
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/E:U",
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/MSI:S/MSA:S",
        "CVSS:4.0/AV:P/AC:H/AT:P/PR:H/UI:A/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N/E:U",
        "CVSS:4.0/AV:P/AC:H/AT:P/PR:H/UI:A/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N/MSI:S",
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/MVC:N/MVI:N/MVA:N",
        "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:X/CR:X/IR:X/AR:X/"
        "MAV:X/MAC:X/MAT:X/MPR:X/MUI:X/MVC:X/MVI:X/MVA:X/MSC:X/MSI:X/MSA:X/"
        "S:X/AU:X/R:X/V:X/RE:X/U:X",
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/S:P/AU:Y/R:I/V:C/RE:H/U:Red",
    ]
    rows = []
    for vector in vectors:
        c = CVSS4(vector)
        rows.append((vector, c.base_score, c.severity))
    return rows


def write(name, rows):
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["vector", "base_score", "severity"])
        for vector, score, severity in rows:
            w.writerow([vector, "{0:.1f}".format(score), severity])
    print("{0}: {1} vectors".format(path, len(rows)))


def main():
    rng = random.Random(SEED)
    os.makedirs(OUT_DIR, exist_ok=True)
    write("v3_0.csv", v3_rows(0, rng))
    write("v3_1.csv", v3_rows(1, rng))
    write("v4_0.csv", v4_rows(rng))


if __name__ == "__main__":
    main()
