"""JUnit XML of every gate, for CI test tabs: one suite per gate kind, one case per artifact
(and per validation split, for accuracy).

failed -> <failure>; warned and unverified -> <skipped> with the reason (CI tabs show them
without failing the run); passed and measured -> a plain case with its numbers as properties.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET


def junit_xml(report: dict) -> str:
    root = ET.Element("testsuites", name=f"mdeploy {report['name']}")
    suites: dict[str, list[dict]] = {}
    for gate in report.get("gates", []):
        suites.setdefault(gate["gate"], []).append(gate)
    total = failures = skipped = 0
    for kind, gates in sorted(suites.items()):
        suite = ET.SubElement(root, "testsuite", name=f"{report['name']}.{kind}")
        s_fail = s_skip = 0
        for gate in gates:
            case = ET.SubElement(suite, "testcase", classname=f"{report['name']}.{kind}", name=gate["artifact"] + (f" on {gate['split']}" if gate.get("split") else ""))
            detail = "; ".join(f"{c['check']}: {c.get('detail') or c.get('value')} (limit {c.get('limit')})" for c in gate.get("checks", []))
            if gate["status"] == "failed":
                s_fail += 1
                bad = [c for c in gate.get("checks", []) if not c.get("ok")]
                message = "; ".join(f"{c['check']}: {c.get('detail') or c.get('value')} (limit {c.get('limit')})" for c in bad)
                ET.SubElement(case, "failure", message=message or "failed", type=kind).text = detail
            elif gate["status"] in ("warned", "unverified", "not run"):
                s_skip += 1
                ET.SubElement(case, "skipped", message=f"{gate['status']}: {detail}" if detail else gate["status"])
            elif detail:
                ET.SubElement(case, "system-out").text = detail
        suite.set("tests", str(len(gates)))
        suite.set("failures", str(s_fail))
        suite.set("skipped", str(s_skip))
        suite.set("errors", "0")
        total += len(gates)
        failures += s_fail
        skipped += s_skip
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("skipped", str(skipped))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
