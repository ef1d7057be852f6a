"""Put untrusted free text (a PRD description) into generated files, inert.

Each function returns text that the target language reads back as exactly the
input (after the documented normalisation) and that can never close a quote,
start a comment, open a block or change the file's structure. Stdlib only: the
Copier extension loads this file by path before any project dependency exists.
"""

from __future__ import annotations

import re
import string
import unicodedata

_SURROGATES = re.compile("[\ud800-\udfff]")

#: Markdown treats every ASCII punctuation character as escapable (CommonMark 2.4).
_MD_PUNCTUATION = frozenset(string.punctuation)


def clean(text: object) -> str:
    """Text as ``str`` with lone surrogates (never valid UTF-8) replaced by U+FFFD."""
    return _SURROGATES.sub("\ufffd", str(text))


def _is_safe_char(ch: str) -> bool:
    """Printable and not a line/paragraph separator, bidi control or other format char.

    Format characters (category Cf: bidi overrides, zero-width joiners, BOM) are
    escaped so a description cannot reorder how surrounding code is displayed.
    """
    return ch.isprintable() and unicodedata.category(ch) not in {"Cf", "Zl", "Zp", "Co", "Cn"}


def _hex_escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


_PY_SIMPLE_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def py_str(text: object) -> str:
    """A Python string literal (quotes included) whose value is ``text``.

    Plain literal, never an f-string, so ``{}`` stays inert. The quote choice
    follows ``ruff format`` (double quotes unless single quotes need fewer
    escapes) so generated code passes ``ruff format --check``.
    """
    value = clean(text)
    quote = "'" if value.count('"') > value.count("'") else '"'
    out: list[str] = [quote]
    for ch in value:
        if ch in _PY_SIMPLE_ESCAPES:
            out.append(_PY_SIMPLE_ESCAPES[ch])
        elif ch == quote:
            out.append("\\" + ch)
        elif _is_safe_char(ch) or ch == " ":
            out.append(ch)
        else:
            out.append(_hex_escape(ch))
    out.append(quote)
    return "".join(out)


_YAML_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def yaml_str(text: object) -> str:
    """A YAML double-quoted scalar whose value is ``text`` (valid YAML 1.1 and 1.2).

    Line and paragraph separators (U+0085, U+2028, U+2029) are escaped: YAML
    treats them as line breaks and would fold them away.
    """
    out: list[str] = ['"']
    for ch in clean(text):
        if ch in _YAML_SIMPLE_ESCAPES:
            out.append(_YAML_SIMPLE_ESCAPES[ch])
        elif (_is_safe_char(ch) and ch != "\x85") or ch == " ":
            out.append(ch)
        else:
            out.append(_hex_escape(ch))
    out.append('"')
    return "".join(out)


_TOML_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def toml_str(text: object) -> str:
    """A TOML basic string (one line, quotes included) whose value is ``text``."""
    out: list[str] = ['"']
    for ch in clean(text):
        if ch in _TOML_SIMPLE_ESCAPES:
            out.append(_TOML_SIMPLE_ESCAPES[ch])
        elif _is_safe_char(ch) or ch == " ":
            out.append(ch)
        else:
            code = ord(ch)
            # TOML has only \uXXXX and \UXXXXXXXX, no \x.
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def md_text(text: object) -> str:
    """Markdown that displays ``text`` literally.

    Every ASCII punctuation character is backslash-escaped (CommonMark allows
    this for all of them), so no heading, list, link, HTML, code span, table or
    emphasis can start. Line breaks are kept as hard breaks inside one paragraph;
    blank lines collapse so the text cannot end the paragraph and start a block.
    """
    lines = [_md_line(line) for line in clean(text).splitlines()]
    lines = [line for line in lines if line.strip()]
    return "  \n".join(lines)


def _md_line(line: str) -> str:
    out: list[str] = []
    for ch in line.strip():
        if ch in _MD_PUNCTUATION:
            out.append("\\" + ch)
        elif _is_safe_char(ch) or ch == " ":
            out.append(ch)
        elif ch == "\t":
            out.append(" ")
        else:
            out.append("\ufffd")
    return "".join(out)


def one_line(text: object, limit: int = 0) -> str:
    """All whitespace runs (newlines included) folded to single spaces; control and
    format characters dropped; optionally cut to ``limit`` characters."""
    folded = " ".join(clean(text).split())
    result = "".join(ch for ch in folded if _is_safe_char(ch) or ch == " ")
    if limit and len(result) > limit:
        result = result[: max(limit - 3, 0)].rstrip() + "..."
    return result


def hash_comment(text: object, prefix: str = "# ") -> str:
    """``text`` as comment lines for files that comment with ``#`` (Python, YAML,
    TOML, Dockerfile, .env). Every line gets the prefix; control and format
    characters are dropped, so nothing can escape the comment."""
    lines = []
    for raw in clean(text).splitlines() or [""]:
        line = "".join(ch for ch in raw if _is_safe_char(ch) or ch == " ").rstrip()
        lines.append((prefix + line).rstrip())
    return "\n".join(lines)
