"""pf.conf tokens, as pfctl's yylex() produces them.

Follows parse.y's lexer: ``#`` comments, ``\\``-newline continuations, quoted strings (no macro
expansion inside), ``$macro`` expansion as if the macro's text had been written in its place
(so ``$if:network`` lexes as one word; text that came from a macro is not expanded again),
numbers only when followed by a character that may end a number, a ``-`` that does not start a
number is a token of its own, the operators ``!= <= >= <> >< ->``, and newlines as tokens
(they end statements). Form feeds are blanks.

The file is lexed one logical line at a time: macros are substituted in the line, then one
master regular expression splits it. The parser must therefore define a macro before asking
for the first token of the next line (it does).

Pure: works on text; ``include`` is the parser's business.
"""

from __future__ import annotations

import re
from typing import Callable

from pfha.conf.errors import ParseError


class Token:
    """One token. ``kind``: ``word`` (unquoted string), ``string`` (quoted), ``number``,
    ``nl`` (end of line), ``eof``, or the operator/punctuation text itself."""

    __slots__ = ("kind", "value", "line", "number")

    def __init__(self, kind: str, value: str, line: int, number: int = 0) -> None:
        self.kind = kind
        self.value = value
        self.line = line
        self.number = number

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.value in words

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"{self.kind}:{self.value!r}@{self.line}"


# One alternation, classified by its first character in Python (cheaper than named groups).
_TOKEN_RE = re.compile(
    r"[ \t\f\r\v]*(?:#[^\n]*)?(\\\n|\n"
    r"|\"(?:[^\"\\]|\\.|\\\n)*\"|'(?:[^'\\]|\\.|\\\n)*'"
    r"|!=|<=|>=|<>|><|->"
    r"|-[0-9]+(?=[ \t\n\r\f\v),/}><=]|\Z)"
    r"|[^(){}<>!=/#,\"'\s\-][^(){}<>!=/#,\"'\s]*"
    r"|[^ \t\f\r\v])?",
    re.DOTALL,
)
_OPS = frozenset(("!=", "<=", ">=", "<>", "><", "->"))
# The same tokens for a "plain" line (no quotes, no backslash, no digits right before
# ``({!#``), which is nearly every line: findall() returns the token texts in one call and
# only blanks are skipped (the last alternative takes any other character).
_PLAIN_RE = re.compile(
    r"#[^\n]*|!=|<=|>=|<>|><|->"
    r"|-[0-9]+(?=[ \t\n\r\f\v),/}><=]|\Z)"
    r"|[^(){}<>!=/#,\"'\s\-][^(){}<>!=/#,\"'\s]*"
    r"|[^ \t\f\r\v]"
)
_NOT_PLAIN_RE = re.compile(r"[\"'\\]|[0-9][({!#]")
# token text -> kind, for the tokens whose kind is fixed by their text
_FIXED_KINDS = {c: c for c in "(){}<>!=/,-"} | {op: op for op in _OPS} | {"\n": "nl"}
_BLANK_START = frozenset(" \t\f\r\v#")
_PUNCT = frozenset("(){}<>!=/,-")
# a digit-only word is a number unless what follows cannot end a number (parse.y)
_NOT_END_NUMBER = frozenset("({!#\"'")

# what is not macro-expanded: quoted strings and comments; what is: $name
_MACRO_SCAN_RE = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|\#[^\n]*|\$([A-Za-z0-9_]*)""", re.DOTALL)

MAX_LINE = 1 << 22


def _unquote(body: str, quote: str) -> str:
    if "\\" not in body:
        return body
    out = []
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c == "\\" and i + 1 < n:
            nxt = body[i + 1]
            if nxt == quote or nxt == "\\":
                out.append(nxt)
                i += 2
                continue
            if nxt == "\n":
                i += 2
                continue
        out.append(c)
        i += 1
    return "".join(out)


#: token text -> (kind, number) on plain lines (None: a comment); words recur, so memoised
_PLAIN_KINDS: dict[str, tuple[str | None, int]] = {}


def _plain_kind(piece: str) -> tuple[str | None, int]:
    kind = _FIXED_KINDS.get(piece)
    if kind is not None:
        found = (kind, 0)
    elif piece[0] == "#":
        return (None, 0)
    elif piece[0] == "-" or (piece.isdigit() and piece.isascii()):
        found = ("number", int(piece))
    else:
        found = ("word", 0)
    if len(_PLAIN_KINDS) < 16384 and len(piece) <= 64:
        _PLAIN_KINDS[piece] = found
    return found


class Lexer:
    """Tokens of one file. ``macros`` is shared with the parser, which defines them; the names
    expanded are added to ``used`` (pfctl -vv warns about macros never used)."""

    def __init__(self, text: str, filename: str, macros: dict[str, str], used: set[str] | None = None) -> None:
        self.filename = filename
        self.macros = macros
        self.used = used if used is not None else set()
        self._lines = text.split("\n")
        self._next_line = 0
        self._tokens: list[Token] = []
        self._index = 0
        self.line = 1
        self._pending: list[Token] = []
        #: called with (message, line) for an error in a line; the line is then skipped
        self.on_error: Callable[[str, int], None] | None = None

    def error(self, message: str, line: int | None = None) -> ParseError:
        return ParseError(message, self.filename, line if line is not None else self.line)

    def push_back(self, token: Token) -> None:
        self._pending.append(token)

    def next(self) -> Token:
        if self._pending:
            return self._pending.pop()
        while self._index >= len(self._tokens):
            if not self._load_line():
                return Token("eof", "", self.line)
        tok = self._tokens[self._index]
        self._index += 1
        return tok

    # ------------------------------------------------------------------ lines
    def _load_line(self) -> bool:
        """Tokenize the next logical line (a physical line plus its continuations)."""
        lines = self._lines
        if self._next_line >= len(lines):
            return False
        i = first = self._next_line
        last = len(lines) - 1
        while lines[i].endswith("\\") and i < last:
            i += 1
        self._next_line = i + 1
        text = lines[first] if i == first else "\n".join(lines[first:i + 1])
        if i < last:
            text += "\n"
        line = first + 1
        self._tokens = []
        self._index = 0
        end = i + 1
        try:
            if "$" in text:
                text = self._expand(text, line)
            if _NOT_PLAIN_RE.search(text) is None:
                self._tokenize_plain(text, line)
            else:
                self._tokenize(text, line)
        except ParseError as error:
            if self.on_error is None:
                raise
            self.on_error(error.message, error.line or line)
            self._tokens = [Token("nl", "\n", end)] if i < last else []
            self._index = 0
        finally:
            self.line = i + 2 if i < last else i + 1
        return True

    def _expand(self, text: str, line: int) -> str:
        macros = self.macros
        used = self.used

        def substitute(m: re.Match) -> str:
            if m.group(0)[0] != "$":
                return m.group(0)
            name = m.group(1)
            if not name:
                raise self.error("syntax error", line)
            value = macros.get(name)
            if value is None:
                raise self.error(f"macro '{name}' not defined", line)
            used.add(name)
            return value.replace("\n", " ")

        out = _MACRO_SCAN_RE.sub(substitute, text)
        if len(out) > MAX_LINE:
            raise self.error("line too long after macro expansion", line)
        return out

    def _tokenize_plain(self, text: str, line: int) -> None:
        """_tokenize() for a line with no quotes, continuations or number ambiguity."""
        append = self._tokens.append
        known = _PLAIN_KINDS.get
        for piece in _PLAIN_RE.findall(text):
            kind_number = known(piece)
            if kind_number is None:
                kind_number = _plain_kind(piece)
            if kind_number[0] is not None:
                append(Token(kind_number[0], piece, line, kind_number[1]))

    def _tokenize(self, text: str, line: int) -> None:
        append = self._tokens.append
        pos = 0
        for m in _TOKEN_RE.finditer(text):
            piece = m.group(1)
            if piece is None:
                continue
            pos = m.end()
            c = piece[0]
            if c == "\n":
                append(Token("nl", "\n", line))
                line += 1
            elif c == "\\":
                if piece == "\\\n":
                    line += 1  # a continuation
                else:
                    append(Token("word", piece, line))
            elif c == '"' or c == "'":
                if len(piece) < 2 or piece[-1] != c:
                    raise self.error("unterminated quoted string", line)
                append(Token("string", _unquote(piece[1:-1], c), line))
                if "\n" in piece:
                    line += piece.count("\n")
            elif len(piece) == 1 and c in _PUNCT:
                append(Token(c, c, line))
            elif piece in _OPS:
                append(Token(piece, piece, line))
            elif c == "-" or (piece.isascii() and piece.isdigit()):
                if c != "-" and text[pos:pos + 1] in _NOT_END_NUMBER and pos < len(text):
                    append(Token("word", piece, line))
                else:
                    append(Token("number", piece, line, int(piece)))
            else:
                append(Token("word", piece, line))
