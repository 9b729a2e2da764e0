"""Recipe strings in generated code: every literal parses and means exactly the recipe's value.

Property tests over arbitrary Unicode plus strings assembled from the pieces that end,
interpolate or comment out a literal. Parsing is tree-sitter's Kotlin and Swift grammars;
meaning is checked against independent readers of each language's escape rules (the
Kotlin reader is itself checked against the real kotlinc in test_kotlin.py, which compiles
and runs a batch of such literals). Identifiers are validated, never escaped.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mdeploy.codegen import escape
from mdeploy.errors import InputError
from tests.codegen import toolchain as tc

PIECES = ['"', "\\", "$", "${", "$x", "{", "}", "\\(", ")", "*/", "/*", "//", "\n", "\r", "\t", "\0", "'", "`", "\\u0041",
          "\\n", "é", "中", "\U0001f600", "\u2028", "\ufeff", "#", "%1$s", "@", "?", " ", "  ", '"""', "a"]
hostile = st.one_of(st.text(), st.lists(st.sampled_from(PIECES), max_size=12).map("".join))


def read_kotlin(literal: str) -> str:
    """The value of a Kotlin double-quoted literal (escapes of the Kotlin spec; templates are errors)."""
    assert literal[0] == literal[-1] == '"'
    body, out, i = literal[1:-1], [], 0
    simple = {"t": "\t", "b": "\b", "n": "\n", "r": "\r", "'": "'", '"': '"', "\\": "\\", "$": "$"}
    units: list[int] = []

    def flush():
        if units:
            out.append(b"".join(u.to_bytes(2, "big") for u in units).decode("utf-16-be"))
            units.clear()

    while i < len(body):
        ch = body[i]
        if ch == "\\" and body[i + 1] == "u":
            units.append(int(body[i + 2 : i + 6], 16))
            i += 6
            continue
        flush()
        if ch == "\\":
            out.append(simple[body[i + 1]])
            i += 2
        else:
            assert ch != '"', "unescaped quote"
            assert not (ch == "$" and re.match(r"[A-Za-z_{]", body[i + 1 : i + 2])), "string template"
            out.append(ch)
            i += 1
    flush()
    return "".join(out)


def read_android(text: str) -> str:
    """The value aapt gives a <string> resource's text (after XML parsing)."""
    out, i, quoted = [], 0, False
    escapes = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"', "@": "@", "?": "?"}
    pending_space = False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if pending_space:
                out.append(" ")
                pending_space = False
            nxt = text[i + 1]
            if nxt == "u":
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
            else:
                out.append(escapes[nxt])
                i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch in " \n\t\r" and not quoted:
            pending_space = bool(out)  # runs collapse; leading whitespace goes
        else:
            if pending_space:
                out.append(" ")
                pending_space = False
            out.append(ch)
        i += 1
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(hostile)
def test_kotlin_literal_parses_and_keeps_its_value(value):
    literal = escape.kotlin_string(value)
    assert literal.isascii() and "\n" not in literal
    assert read_kotlin(literal) == value
    source = f"package a\n\nval x: String = {literal}\n/* after */\nval y = 1\n"
    assert tc.syntax_problems(source, "kotlin") == []


@settings(max_examples=300, deadline=None)
@given(hostile)
def test_swift_literal_parses_and_keeps_its_value(value):
    literal = escape.swift_string(value)
    assert literal.isascii() and "\n" not in literal
    assert escape.unescape_swift(literal) == value
    source = f"let x: String = {literal}\n/* after */\nlet y = 1\n"
    assert tc.syntax_problems(source, "swift") == []


@settings(max_examples=300, deadline=None)
@given(hostile.filter(lambda s: s.strip() and not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in s)))
def test_android_string_resource_keeps_its_value(value):
    value = escape.check_display_name(value)
    document = f'<?xml version="1.0" encoding="utf-8"?>\n<resources><string name="app_name">{escape.android_string(value)}</string></resources>'
    text = ET.fromstring(document.encode("utf-8")).find("string").text or ""
    assert read_android(text) == value


@settings(max_examples=200, deadline=None)
@given(hostile.filter(lambda s: not any(ord(c) < 0x20 and c not in "\t\n\r" for c in s)))
def test_xml_text_keeps_its_value(value):
    element = ET.fromstring(f"<string a=\"{escape.xml_text(value)}\">{escape.xml_text(value)}</string>")
    assert (element.text or "") == value.replace("\r\n", "\n").replace("\r", "\n")


@given(hostile)
def test_yaml_strings_keep_their_value(value):
    from mdeploy.codegen.render import _yaml_str

    assert yaml.safe_load(f"key: {_yaml_str(value)}\n") == {"key": value}


def test_readers_reject_what_would_break():
    """The readers above can fail: a raw quote or a template in a literal is caught."""
    with pytest.raises(AssertionError):
        read_kotlin('"a"b"')
    with pytest.raises(AssertionError):
        read_kotlin('"${x}"')
    assert tc.syntax_problems('val x = "a"b"\n', "kotlin") != []
    assert tc.syntax_problems('let x = "a\\(b"\n', "swift") != []
    assert read_android("a   b") == "a b"  # the collapsing android_string must defeat


@pytest.mark.parametrize(
    "package, ok",
    [("com.mdeploy.pose", True), ("com.example.app2", True), ("pose", False), ("com.Example.app", False),
     ("com.my_company.app", False), ("com.class.app", False), ("com.example.fun", False), ("com..app", False),
     ("com.example.1app", False), ("com.example.app;", False), ("com.example.app\nimport x", False)],
)
def test_packages_are_validated_not_escaped(package, ok):
    if ok:
        assert escape.check_package(package) == package
    else:
        with pytest.raises(InputError, match="package"):
            escape.check_package(package)


@pytest.mark.parametrize("bundle, ok", [("com.mdeploy.PoseDemo", True), ("org.example.Hostile-Demo", True),
                                         ("PoseDemo", False), ("com.example.pose demo", False), ("com.example.\"x\"", False)])
def test_bundle_ids_are_validated(bundle, ok):
    if ok:
        assert escape.check_bundle_id(bundle) == bundle
    else:
        with pytest.raises(InputError, match="bundle id"):
            escape.check_bundle_id(bundle)


def test_display_names_refuse_control_characters():
    with pytest.raises(InputError, match="U\\+0007"):
        escape.check_display_name("Pose\x07Demo")
    with pytest.raises(InputError, match="blank"):
        escape.check_display_name("   ")


@pytest.mark.parametrize("value", [0.0, 1.0, -1.0, 1e-7, 123.5, 1 / 3, 3.4e38, 0.007843137718737125])
def test_float_literals_round_trip(value):
    kt = escape.kotlin_float(value)
    assert kt.endswith("f") and float(kt[:-1]) == value
    assert float(escape.swift_float(value)) == value
    assert tc.syntax_problems(f"val x: Float = {kt}\n", "kotlin") == []


def test_non_finite_floats_are_refused():
    with pytest.raises(ValueError):
        escape.kotlin_float(float("nan"))
    with pytest.raises(ValueError):
        escape.kotlin_float(float("inf"))


def test_recipe_rejects_bad_app_values(tmp_path):
    from mdeploy.errors import RecipeError
    from mdeploy.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(
        "name: r\nmodel: {arch: tiny_cpm, input: {channels: rgb, range: [0, 1]}, keypoints: aic14}\n"
        "data: {train: {synthetic: {count: 8}}}\n"
        "app:\n  android: {project: a, package: com.my_app.x, name: \"a\\u202eb\", artifact: coreml}\n"
        "  ios: {project: i, bundle_id: nodots}\n",
        encoding="utf-8",
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    rendered = json.dumps([i.render() for i in info.value.issues])
    for key in ("app.android.package", "app.android.name", "app.android.artifact", "app.ios.bundle_id"):
        assert key in rendered


# ---------------------------------------------------------------------------- README, strings.xml, Info.plist, report.html


def markdown_heading_text(source: str) -> str:
    """The text of a one-line Markdown heading as CommonMark reads it; anything but plain text fails."""
    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").parse(source)
    assert [t.type for t in tokens] == ["heading_open", "inline", "heading_close"], source
    children = tokens[1].children
    assert all(c.type == "text" for c in children), [c.type for c in children]  # no emphasis, link, code, HTML
    return "".join(c.content for c in children)


def name_ok(value: str) -> bool:
    try:
        escape.check_display_name(value)
    except InputError:
        return False
    return value == value.strip()  # a heading drops what surrounds it; names are shown trimmed anyway


MARKDOWN_PIECES = ["*", "_", "`", "[x](y)", "<b>", "&amp;", "&", "# ", " #", "\\", "!", "|", "~~", "$x$", ":smile:", "1. ", "<http://a>"]
markdownish = st.one_of(hostile, st.lists(st.sampled_from(MARKDOWN_PIECES + PIECES), max_size=10).map("".join))


@settings(max_examples=300, deadline=None)
@given(markdownish.filter(name_ok))
def test_markdown_text_reads_as_the_value(value):
    assert markdown_heading_text(f"# {escape.markdown_text(value)}: Android pose demo\n") == f"{value}: Android pose demo"


def test_markdown_reader_sees_markup():
    """The check above can fail: unescaped, the same names become emphasis, links and HTML."""
    for raw in ("*a*", "[x](y)", "<b>", "`c`"):
        with pytest.raises(AssertionError):
            markdown_heading_text(f"# {raw}\n")
    with pytest.raises(ValueError, match="control"):
        escape.markdown_text("a\u202eb")


@pytest.mark.parametrize("char", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"])
def test_display_names_refuse_bidirectional_controls(char):
    with pytest.raises(InputError, match=f"U\\+{ord(char):04X}"):
        escape.check_display_name(f"Pose{char}Demo")


@pytest.mark.parametrize("name", ["Pose $(HOME)", "Pose ${PRODUCT_NAME}", "$HOME", "a$(b:lower)"])
def test_ios_names_refuse_build_setting_references(name):
    with pytest.raises(InputError, match="build setting"):
        escape.check_ios_display_name(name)
    with pytest.raises(ValueError, match="build setting"):
        escape.plist_string(name)


@settings(max_examples=200, deadline=None)
@given(hostile.filter(name_ok).filter(lambda s: not re.search(r"\$[({A-Za-z_]", s)))
def test_plist_string_keeps_its_value(value):
    import plistlib

    value = escape.check_ios_display_name(value)
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict><key>CFBundleDisplayName</key>'
        f"<string>{escape.plist_string(value)}</string></dict></plist>"
    )
    assert plistlib.loads(document.encode("utf-8"))["CFBundleDisplayName"] == value.replace("\r", "\n")


def aapt_format_problem(value: str) -> bool:
    """aapt2's check of a `formatted` string resource (util::VerifyJavaStringFormat): more than
    one substitution where any is non-positional fails the build ("did you mean to add the
    formatted="false" attribute?"). `%%` and `%n` are no substitution."""
    args, nonpositional, i = 0, False, 0
    while i < len(value):
        if value[i] == "%" and i + 1 < len(value):
            if value[i + 1] in "%n":
                i += 2
                continue
            args += 1
            digits = re.match(r"\d+\$", value[i + 1 :])
            nonpositional = nonpositional or digits is None
        i += 1
    return args > 1 and nonpositional


def test_aapt_format_check_model():
    assert aapt_format_problem("50% off, 20% more") and aapt_format_problem("%s and %d")
    assert not aapt_format_problem("%1$.1f FPS · inference %2$.1f ms") and not aapt_format_problem("100%")
    assert not aapt_format_problem("100%% sure, %s")


def test_report_html_never_holds_control_characters(tmp_path):
    """Text from models, runtimes and files reaches the report: NUL and other controls are replaced."""
    import json

    from mdeploy.report.collect import collect
    from mdeploy.report.html import render_html

    manifest = {"schema": "mdeploy.manifest/1", "name": "nul", "artifacts": [
        {"id": "tflite/fp32", "path": "tflite/a\x00b.tflite", "format": "tflite\x1b[2J", "sha256": "0" * 64, "size": 10}],
        "gates": {"parity": {"results": [{"artifact": "tflite/fp32", "status": "failed", "checks": [],
                                          "metrics": {"runtime_error": "RuntimeError: bad\x00tensor\x07"}}]}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    html = render_html(collect(tmp_path, [["description", "text\x00with\x0bcontrols"]]), tmp_path)
    assert "bad\ufffdtensor" in html and "text\ufffdwith" in html
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", html)
