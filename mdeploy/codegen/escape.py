"""Values from recipes, made safe for the source code they land in.

Every string from a recipe is emitted as a string literal through `kotlin_string` or
`swift_string`, which escape everything that could end the literal or change its meaning
(quotes, backslashes, Kotlin's `$` templates, Swift's `\\(` interpolation, line breaks,
control characters); non-ASCII text is escaped too, so a file's bytes are ASCII. Free
text never goes into comments. Identifiers (packages, type names, model tags) are
validated, never escaped: an invalid one is an error.
"""

from __future__ import annotations

import re
import string

from mdeploy.errors import InputError

KOTLIN_HARD_KEYWORDS = frozenset(
    "as break class continue do else false for fun if in interface is null object package return super this throw "
    "true try typealias typeof val var when while".split()
)
JAVA_KEYWORDS = frozenset(
    "abstract assert boolean break byte case catch char class const continue default do double else enum extends "
    "final finally float for goto if implements import instanceof int interface long native new package private "
    "protected public return short static strictfp super switch synchronized this throw throws transient try void "
    "volatile while true false null _".split()
)
SWIFT_KEYWORDS = frozenset(
    "associatedtype class deinit enum extension fileprivate func import init inout internal let open operator private "
    "protocol public rethrows static struct subscript typealias var break case continue default defer do else "
    "fallthrough for guard if in repeat return switch where while as Any catch false is nil super self Self throw "
    "throws true try".split()
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # always fullmatch: `$` accepts a trailing newline


def _unicode_units(ch: str) -> list[int]:
    data = ch.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_KOTLIN_ESCAPES = {**_ESCAPES, "$": "\\$"}  # `$` would start a string template
_SWIFT_ESCAPES = {**_ESCAPES, "\0": "\\0"}


def _literal(value: str, escapes: dict[str, str], other) -> str:
    """A double-quoted literal: `escapes` for special characters, printable ASCII as is, `other` for the rest."""
    out = []
    for ch in str(value):
        if ch in escapes:
            out.append(escapes[ch])
        elif 0x20 <= ord(ch) < 0x7F:
            out.append(ch)
        else:
            out.append(other(ch))
    return '"' + "".join(out) + '"'


def kotlin_string(value: str) -> str:
    """A Kotlin string literal (double quotes) whose value is exactly `value`."""
    return _literal(value, _KOTLIN_ESCAPES, lambda ch: "".join(f"\\u{unit:04x}" for unit in _unicode_units(ch)))


def swift_string(value: str) -> str:
    """A Swift string literal (double quotes) whose value is exactly `value`."""
    return _literal(value, _SWIFT_ESCAPES, lambda ch: f"\\u{{{ord(ch):x}}}")


def unescape_swift(literal: str) -> str:
    """The value of a literal produced by `swift_string` (Swift's escape rules for that subset)."""
    body = literal[1:-1]
    out, i = [], 0
    simple = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t", "0": "\0", "'": "'"}
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt == "u":
            end = body.index("}", i)
            out.append(chr(int(body[i + 3 : end], 16)))
            i = end + 1
        else:
            raise ValueError(f"unsupported escape \\{nxt}")
    return "".join(out)


def check_identifier(value: str, what: str, keywords: frozenset) -> str:
    if not _IDENT.fullmatch(value) or value in keywords:
        reason = "is a reserved word" if value in keywords else "is not an identifier (letters, digits, '_')"
        raise InputError(f"{what} {value!r} {reason}")
    return value


def check_package(value: str) -> str:
    """A Kotlin package: dotted parts of lowercase letters and digits (Kotlin's convention), none a keyword."""
    parts = value.split(".")
    if len(parts) < 2:
        raise InputError(f"package {value!r} needs at least two parts, e.g. com.example.pose")
    for part in parts:
        if "_" in part and re.fullmatch(r"[a-z][a-z0-9_]*", part):
            raise InputError(f"package {value!r}: part {part!r} has an underscore, which Kotlin package names do not use")
        if not re.fullmatch(r"[a-z][a-z0-9]*", part):
            raise InputError(f"package {value!r}: part {part!r} is not lowercase letters and digits starting with a letter")
        if part in KOTLIN_HARD_KEYWORDS or part in JAVA_KEYWORDS:
            raise InputError(f"package {value!r}: part {part!r} is a Kotlin or Java keyword")
    return value


def check_bundle_id(value: str) -> str:
    """An Apple bundle identifier: reverse-DNS parts of letters, digits and '-'."""
    parts = value.split(".")
    if len(parts) < 2 or not all(re.fullmatch(r"[A-Za-z0-9-]+", part) for part in parts):
        raise InputError(f"bundle id {value!r} is not reverse-DNS of letters, digits and '-', e.g. com.example.PoseDemo")
    return value


_XML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


# Embeddings, overrides and isolates: they reorder how text around them is shown ("Trojan
# Source"). Never in a name; in literals they are \u escapes like all non-ASCII text.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _invisible(value: str) -> list[str]:
    """Control and bidirectional-control characters of `value`, as U+XXXX."""
    return sorted({f"U+{ord(ch):04X}" for ch in value if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in BIDI_CONTROLS})


def check_display_name(value: str) -> str:
    """A name people see (app label): printable text, no control or bidirectional-control characters, not blank."""
    bad = _invisible(value)
    if bad:
        raise InputError(f"name {value!r} holds control characters ({', '.join(bad)})")
    if not value.strip():
        raise InputError("name is blank")
    return value


# Xcode expands build settings in Info.plist values: $(NAME), ${NAME} and $NAME.
_BUILD_SETTING = re.compile(r"\$[({A-Za-z_]")


def check_ios_display_name(value: str) -> str:
    """An iOS app name: a display name that Xcode will not expand as a build-setting reference."""
    check_display_name(value)
    ref = _BUILD_SETTING.search(value)
    if ref:
        raise InputError(
            f"name {value!r} holds {ref.group()!r}, which Xcode expands as a build setting in Info.plist; "
            "leave out the '$' or put a space after it"
        )
    return value


def xml_text(value: str) -> str:
    """Text for an XML element or attribute: entities for & < > and both quotes.

    XML 1.0 cannot carry most control characters: they are an error, not dropped.
    """
    out = []
    for ch in str(value):
        if ch in _XML:
            out.append(_XML[ch])
        elif ord(ch) < 0x20 and ch not in "\t\n\r":
            raise ValueError(f"XML text cannot hold the control character U+{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def plist_string(value: str) -> str:
    """Text of an Info.plist <string>: XML text that holds no build-setting reference for Xcode to expand."""
    ref = _BUILD_SETTING.search(str(value))
    if ref:
        raise ValueError(f"Info.plist text cannot hold {ref.group()!r}: Xcode would expand it as a build setting")
    if any(ch in BIDI_CONTROLS for ch in str(value)):
        raise ValueError("Info.plist text cannot hold bidirectional-control characters")
    return xml_text(value)


def markdown_text(value: str) -> str:
    """Text for a Markdown line that reads as exactly `value`.

    CommonMark takes a backslash before any ASCII punctuation as that character, literally:
    so every one is escaped (emphasis, links, code, HTML, entities, headings, tables, and
    GitHub's math and emoji). Control and bidirectional-control characters are an error.
    """
    bad = _invisible(str(value))
    if bad:
        raise ValueError(f"Markdown text cannot hold control characters ({', '.join(bad)})")
    return "".join("\\" + ch if ch in string.punctuation else ch for ch in str(value))


def android_string(value: str) -> str:
    """The text of an Android `<string>` resource whose value is exactly `value`.

    On top of XML, aapt reads backslash escapes, drops unescaped double quotes, collapses
    runs of whitespace and trims it at the ends, and takes a leading `@` or `?` for a
    reference. So: backslash, quotes, a leading @/?, line breaks and tabs are escaped, and
    a space that would be collapsed or trimmed is written as `\\u0020`.
    """
    text = str(value)
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch in "'\"":
            out.append("\\" + _XML[ch])
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\u000d")
        elif ch in "@?" and i == 0:
            out.append("\\" + ch)
        elif ch == " " and (i == 0 or i == len(text) - 1 or text[i - 1] == " "):
            out.append("\\u0020")
        else:
            out.append(xml_text(ch))
    return "".join(out)


def kotlin_float(value: float) -> str:
    text = repr(float(value))
    if "inf" in text or "nan" in text:
        raise ValueError(f"not a finite number: {value}")
    if "e" in text or "E" in text:
        mantissa, exponent = text.lower().split("e")
        if "." not in mantissa:
            mantissa += ".0"
        text = f"{mantissa}e{int(exponent)}"
    elif "." not in text:
        text += ".0"
    return text + "f"


def swift_float(value: float) -> str:
    return kotlin_float(value)[:-1]
