"""The PEFM CPM's int8 files scored as the accuracy gate now scores them: means over several
crops of each person (evaluate/crops.py), the paired drop and its standard error, beside the
drop on the original crops alone.

Reads the builds `benchmarks/int8_fidelity.py` leaves in its `--out` folder (run that first) and
scores each build's int8 file against its fp32 file (the canonical model's numbers, to 0.01) on
every real set with head sizes, on XNNPACK, with `verify.accuracy.crops: auto` (23 crops of each
of the 9 AI Challenger people, 32 of each of the 5 MPII people), also on the sets a build was not
gated on (the held-out ones).

    python benchmarks/int8_crops.py [--builds /tmp/mdeploy-int8-fidelity]
"""

from __future__ import annotations

import datetime
import json

from common import machine
from int8_fidelity import people, saved_builds


def main() -> None:
    builds = saved_builds()
    from mdeploy.evaluate.crops import copies_for, gate_drop
    from mdeploy.evaluate.evaluator import evaluate
    from mdeploy.runners.litert import LiteRTRunner
    from mdeploy.spec import ModelSpec

    spec = ModelSpec.load(builds[0] / "model" / "spec.json")
    sets = {name: ds for name, ds in people().items() if ds.head_rule is not None}
    fp32 = LiteRTRunner(builds[0] / "tflite" / "pefm_cpm_fp32.tflite", kernels="xnnpack")
    reference = {name: evaluate(fp32, spec, ds, crops=copies_for("auto", len(ds))).to_json() for name, ds in sets.items()}
    print(f"Machine: {machine()}; {datetime.date.today()}; XNNPACK\n")
    print("| build | set | crops | fp32 mean | int8 mean | drop +- se | drop, original crops | float layers |")
    print("|---|---|---|---|---|---|---|---|")
    for build in builds:
        manifest = json.loads((build / "manifest.json").read_text())
        mixed = next(a for a in manifest["artifacts"] if a["id"] == "tflite/int8").get("details", {}).get("mixed_precision") or {}
        layers = len(mixed.get("float_layers") or []) if mixed.get("passed") else 0
        int8 = LiteRTRunner(build / "tflite" / "pefm_cpm_int8.tflite", kernels="xnnpack")
        for name, ds in sets.items():
            ref = reference[name]
            result = evaluate(int8, spec, ds, crops=copies_for("auto", len(ds))).to_json()
            d = gate_drop(ref["primary"], ref, result)
            metric = ref["primary"]
            print(f"| {build.parent.name} | {name} | {d['crops']} | {ref['crops']['metrics'][metric]:.1f} "
                  f"| {result['crops']['metrics'][metric]:.1f} | {d['drop']:.2f} +- {d['se']:.2f} | {d['original']:.1f} | {layers} |",
                  flush=True)


if __name__ == "__main__":
    main()
