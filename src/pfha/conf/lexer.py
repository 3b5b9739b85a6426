"""pf.conf tokens, as pfctl's yylex() produces them.

Follows parse.y's lexer: ``#`` comments, ``\\``-newline continuations, quoted strings (no macro
expansion inside), ``$macro`` expansion by pushing the macro's text back into the input (so
``$if:network`` lexes as one word), numbers only when followed by a character that may end a
number, the two-character operators ``!= <= >= <> ><``, and newlines as tokens (they end
statements). Form feeds are blanks.

Pure: works on text; ``include`` is the parser's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pfha.conf.errors import ParseError


@dataclass(slots=True)
class Token:
    """One token. ``kind``: ``word`` (unquoted string), ``string`` (quoted), ``number``,
    ``nl`` (end of line), ``eof``, or the operator/punctuation text itself."""

    kind: str
    value: str
    line: int
    number: int = 0

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.value in words

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"{self.kind}:{self.value!r}@{self.line}"


# Characters that may appear in an unquoted string (parse.y: allowed_in_string).
_NOT_IN_STRING = set("(){}<>!=/#,\"'") | set(" \t\n\r\f\v")
# Characters that may end a number (parse.y: allowed_to_end_number).
_ENDS_NUMBER = set(" \t\n\r\f\v),/}><=")

_WORD_RE = re.compile(r"[^(){}<>!=/#,\"'\s$]+")
# inside a macro's expansion '$' is an ordinary character (parse.y does not expand twice)
_WORD_DOLLAR_RE = re.compile(r"[^(){}<>!=/#,\"'\s]+")
_NUMBER_RE = re.compile(r"-?[0-9]+")
_MACRO_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
_BLANKS_RE = re.compile(r"(?:[ \t\f\r\v]|\\\n)+")


class Lexer:
    """Tokens of one file. ``macros`` is shared with the parser, which defines them."""

    def __init__(self, text: str, filename: str, macros: dict[str, str]) -> None:
        self.filename = filename
        self.macros = macros
        # the file is lexed one physical line at a time (continuations appended), so a macro
        # splice only ever copies the current line
        self._lines = text.split("\n")
        self._next_line = 0
        self._text = ""
        self._pos = 0
        self._noexpand_end = 0  # text before this position came from a macro expansion
        self.line = 1
        self._pending: list[Token] = []
        self._load_line()

    def _load_line(self) -> bool:
        """Make the next physical line (and its continuation lines) the current text."""
        if self._next_line >= len(self._lines):
            self._text, self._pos = "", 0
            return False
        i = self._next_line
        last = len(self._lines) - 1
        parts = [self._lines[i]]
        while parts[-1].endswith("\\") and i < last:
            i += 1
            parts.append(self._lines[i])
        self._next_line = i + 1
        text = "\n".join(parts)
        if i < last:
            text += "\n"
        self._text, self._pos = text, 0
        self._noexpand_end = 0
        return True

    # ------------------------------------------------------------------ errors
    def error(self, message: str, line: int | None = None) -> ParseError:
        return ParseError(message, self.filename, line if line is not None else self.line)

    # ------------------------------------------------------------------ main
    def push_back(self, token: Token) -> None:
        self._pending.append(token)

    def next(self) -> Token:
        if self._pending:
            return self._pending.pop()
        return self._lex()

    def _lex(self) -> Token:  # noqa: C901 - one state machine, kept together like yylex
        text = self._text
        while True:
            m = _BLANKS_RE.match(text, self._pos)
            if m:
                self.line += m.group().count("\n")
                self._pos = m.end()
            if self._pos >= len(text):
                if not self._load_line():
                    return Token("eof", "", self.line)
                text = self._text
                continue
            c = text[self._pos]
            if c == "#":
                end = text.find("\n", self._pos)
                self._pos = len(text) if end < 0 else end
                continue
            if c == "$" and self._pos >= self._noexpand_end:
                self._expand_macro()
                text = self._text
                continue
            break
        line = self.line
        pos = self._pos
        if c == "\n":
            self._pos += 1
            self.line += 1
            return Token("nl", "\n", line)
        if c in "\"'":
            return self._quoted(c)
        two = text[pos:pos + 2]
        if two in ("!=", "<=", ">=", "<>", "><", "->"):
            self._pos += 2
            return Token(two, two, line)
        if c == "-" or c.isdigit():
            m = _NUMBER_RE.match(text, pos)
            if m and m.group() != "-":
                end = m.end()
                if end >= len(text) or text[end] in _ENDS_NUMBER:
                    self._pos = end
                    return Token("number", m.group(), line, int(m.group()))
            if c == "-":
                # a lone '-' (address ranges) unless it starts a word like "-foo"
                nxt = text[pos + 1:pos + 2]
                if not nxt or nxt in _NOT_IN_STRING or nxt == "$":
                    self._pos += 1
                    return Token("-", "-", line)
        if c in "(){}<>!=/,":
            self._pos += 1
            return Token(c, c, line)
        m = (_WORD_RE if pos >= self._noexpand_end else _WORD_DOLLAR_RE).match(text, pos)
        if not m:
            self._pos += 1
            return Token(c, c, line)
        word = m.group()
        self._pos = m.end()
        # a macro reference in the middle of a word ("foo$bar") joins the word
        while self._pos < len(self._text) and self._text[self._pos] == "$" and self._pos >= self._noexpand_end:
            self._expand_macro()
            m2 = _WORD_RE.match(self._text, self._pos)
            if not m2:
                break
            word += m2.group()
            self._pos = m2.end()
        if len(word) >= 8192:
            raise self.error("string too long", line)
        return Token("word", word, line)

    def _expand_macro(self) -> None:
        """Replace ``$name`` by the macro's value, re-lexed (parse.y pushes it back)."""
        m = _MACRO_NAME_RE.match(self._text, self._pos + 1)
        if not m:
            self._pos += 1  # always make progress, so error recovery cannot loop
            raise self.error("syntax error")
        name = m.group()
        if name not in self.macros:
            self._pos = m.end()
            raise self.error(f"macro '{name}' not defined")
        value = self.macros[name]
        if "\n" in value:
            value = value.replace("\n", " ")
        # splice into the current line only (cheap): the value is lexed as if written here
        self._text = value + self._text[m.end():]
        self._pos = 0
        self._noexpand_end = len(value)
        if len(self._text) > 1 << 24:
            raise self.error("macro expansion too large")

    def _quoted(self, quote: str) -> Token:
        text, line = self._text, self.line
        pos = self._pos + 1
        out: list[str] = []
        while True:
            if pos >= len(text):
                self._pos = pos
                raise self.error("reached end of file while parsing quoted string", line)
            c = text[pos]
            if c == "\\" and pos + 1 < len(text):
                nxt = text[pos + 1]
                if nxt == "\n":
                    self.line += 1
                    pos += 2
                    continue
                if nxt in (quote, "\\"):
                    out.append(nxt)
                    pos += 2
                    continue
                out.append(c)
                pos += 1
                continue
            if c == quote:
                pos += 1
                break
            if c == "\n":
                self._pos = pos
                raise self.error("unterminated quoted string", line)
            out.append(c)
            pos += 1
        self._pos = pos
        return Token("string", "".join(out), line)


