"""Measure the oracle ceilings of docs/simulator.md section 8 and write them next to the probes.

    python docs/build_ceilings.py --patients 1500 --seed 7
    python docs/build_ceilings.py --reuse        # rewrite the tables from docs/ceilings_results.json

Regenerates the cohort the probe table was measured on (quick preset, ``synth.seed``, patients)
without noise, fits the oracle of :mod:`cardiodistill.evaluate.ceilings` out-of-fold for every label
and modality set, writes ``docs/ceilings_results.json`` and replaces the ``ceiling-table`` and
``calibration-table`` blocks of ``docs/simulator.md``, with the probes of
``docs/simulator_results.json`` beside each figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from build_simulator_page import replace_block  # the page's block replacer (this folder)

from cardiodistill.config import load_config
from cardiodistill.evaluate.ceilings import calibration_table_markdown, ceiling_table_markdown, oracle_ceilings

DOCS = Path(__file__).parent
PAGE = DOCS / "simulator.md"
BLOCK, CALIBRATION = "ceiling-table", "calibration-table"
RESULTS = DOCS / "ceilings_results.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help=f"no measuring: rewrite the tables from {RESULTS.name}")
    args = parser.parse_args()

    if args.reuse:
        results = json.loads(RESULTS.read_text())
    else:
        config = load_config("quick", [f"synth.patients={args.patients}", f"synth.seed={args.seed}"])
        start = time.perf_counter()
        results = oracle_ceilings(config, folds=args.folds, bootstrap=args.bootstrap)
        results["synth_seed"] = args.seed
        results["seconds"] = round(time.perf_counter() - start, 1)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    probes = json.loads((DOCS / "simulator_results.json").read_text())
    if probes.get("patients") != results["patients"]:
        print(f"note: the probes were measured on {probes.get('patients')} patients, the oracle on {results['patients']}")
        probes = None
    table = ceiling_table_markdown(results, probes)
    text = replace_block(PAGE.read_text(), BLOCK, table)
    PAGE.write_text(replace_block(text, CALIBRATION, calibration_table_markdown(results, probes)))
    print(table)
    print(f"{results.get('seconds')} s")


if __name__ == "__main__":
    main()
