"""The real tools the generated app code is checked with: javac, kotlinc, ktlint, tree-sitter.

kotlinc and ktlint come from the npm packages in package.json (`make test` installs them);
javac and java from the JDK. A missing tool fails the test that needs it: the checks are
never skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from tests.helpers import REPO

STUBS = Path(__file__).parent / "stubs"
KOTLINC = REPO / "node_modules" / "kotlin-compiler" / "bin" / "kotlinc"
KTLINT = REPO / "node_modules" / ".bin" / "ktlint"


def _tool(path_or_name) -> str:
    found = str(path_or_name) if Path(path_or_name).is_file() else shutil.which(str(path_or_name))
    assert found, f"{path_or_name} is missing: run `make test` (it installs the JDK check and the npm tools)"
    return found


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAVA_OPTS="-Xss8m -Xmx2g")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc


def compile_stubs(out: Path) -> Path:
    """javac the Android/AndroidX/TFLite stand-ins into `out` (a class folder)."""
    sources = sorted(str(p) for p in STUBS.rglob("*.java"))
    out.mkdir(parents=True, exist_ok=True)
    run([_tool("javac"), "--release", "17", "-d", str(out), *sources])
    return out


def r_java(app: Path, package: str) -> str:
    """The R class aapt would generate for the app's resources (ids, layouts, strings).

    Parsing the real resource files means a view id or string the Kotlin code names but
    the XML lacks fails the compile, as it would in Gradle.
    """
    import xml.etree.ElementTree as ET

    android = "{http://schemas.android.com/apk/res/android}"
    res = app / "app" / "src" / "main" / "res"
    groups: dict[str, set[str]] = {"id": set(), "layout": set(), "string": set(), "style": set()}
    for layout in sorted((res / "layout").glob("*.xml")):
        groups["layout"].add(layout.stem)
        for node in ET.parse(layout).iter():
            ident = node.get(f"{android}id", "")
            if ident.startswith("@+id/"):
                groups["id"].add(ident[len("@+id/") :])
    for values in sorted((res / "values").glob("*.xml")):
        for node in ET.parse(values).getroot():
            if node.tag in ("string", "style"):
                groups[node.tag].add(node.get("name").replace(".", "_"))
    lines = [f"package {package};", "", "public final class R {"]
    counter = 0x7F000000
    for group, names in sorted(groups.items()):
        lines.append(f"    public static final class {group} {{")
        for name in sorted(names):
            counter += 1
            lines.append(f"        public static final int {name} = {counter};")
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def kotlinc(sources: list[Path], classpath: list[Path], out: Path) -> subprocess.CompletedProcess:
    """Compile Kotlin (and Java beside it) with the real compiler; warnings are returned, errors fail."""
    cp = os.pathsep.join(str(p) for p in classpath)
    return run([_tool(KOTLINC), "-jvm-target", "17", "-cp", cp, "-d", str(out), *[str(s) for s in sources]], timeout=900)


def ktlint(files: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool(KTLINT), "--relative", *[str(f) for f in files]], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@lru_cache(maxsize=2)
def _parser(language: str):
    import tree_sitter

    if language == "kotlin":
        import tree_sitter_kotlin as grammar
    else:
        import tree_sitter_swift as grammar
    return tree_sitter.Parser(tree_sitter.Language(grammar.language()))


def syntax_problems(source: str, language: str) -> list[str]:
    """ERROR and MISSING nodes of `source` parsed with the tree-sitter grammar of `language`."""
    tree = _parser(language).parse(source.encode("utf-8"))
    problems = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            kind = "missing" if node.is_missing else "error"
            problems.append(f"{kind} at {node.start_point[0] + 1}:{node.start_point[1] + 1}: {node.text[:60]!r}")
        stack.extend(node.children)
    return problems


def language_of(path: Path) -> str | None:
    return {".kt": "kotlin", ".kts": "kotlin", ".swift": "swift"}.get(path.suffix)


def kotlin_warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"^(warning|.*: warning:)", line)]
