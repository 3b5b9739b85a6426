"""The pf.conf lexer: pfctl's token rules (continuations, quotes, macros, numbers)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pfha.conf.errors import ParseError
from pfha.conf.lexer import Lexer


def tokens(text: str, macros: dict | None = None) -> list[tuple[str, str, int]]:
    lexer = Lexer(text, "t.conf", macros if macros is not None else {})
    out = []
    while True:
        tok = lexer.next()
        if tok.kind == "eof":
            return out
        out.append((tok.kind, tok.value, tok.line))


def test_words_numbers_and_operators():
    assert tokens("port 1024:2048 != 25 >< 3 <> 4 <= >= ->") == [
        ("word", "port", 1), ("word", "1024:2048", 1), ("!=", "!=", 1), ("number", "25", 1),
        ("><", "><", 1), ("number", "3", 1), ("<>", "<>", 1), ("number", "4", 1),
        ("<=", "<=", 1), (">=", ">=", 1), ("->", "->", 1),
    ]


def test_a_number_needs_a_number_ending_character():
    # parse.y: 10/8 is NUMBER '/' NUMBER, 10.1/8 starts with a string
    assert [t[:2] for t in tokens("10/8 10.1/8")] == [
        ("number", "10"), ("/", "/"), ("number", "8"), ("word", "10.1"), ("/", "/"), ("number", "8"),
    ]


def test_lone_dash_is_a_token_for_ranges():
    assert [t[0] for t in tokens("10.0.0.1 - 10.0.0.2")] == ["word", "-", "word"]


def test_comments_continuations_and_line_numbers():
    text = "pass # comment\nblock \\\n  in\n\n# only a comment\nmatch"
    assert tokens(text) == [
        ("word", "pass", 1), ("nl", "\n", 1), ("word", "block", 2), ("word", "in", 3),
        ("nl", "\n", 3), ("nl", "\n", 4), ("nl", "\n", 5), ("word", "match", 6),
    ]


def test_quoted_strings_keep_dollars_and_escapes():
    assert tokens('label "$nr \\"x\\"" \'a b\'') == [
        ("word", "label", 1), ("string", '$nr "x"', 1), ("string", "a b", 1),
    ]


def test_macro_is_substituted_where_written():
    assert [t[1] for t in tokens("from $if:network to $x", {"if": "em0", "x": "{ a, b }"})] == [
        "from", "em0:network", "to", "{", "a", ",", "b", "}",
    ]


def test_macro_text_is_not_expanded_again():
    assert [t[1] for t in tokens("$a", {"a": "$a"})] == ["$a"]


def test_undefined_macro_is_an_error_naming_the_line():
    with pytest.raises(ParseError) as error:
        tokens("pass\npass on $nope")
    assert str(error.value) == "t.conf:2: macro 'nope' not defined"


def test_unterminated_quote_is_an_error():
    with pytest.raises(ParseError, match="unterminated quoted string"):
        tokens('label "abc')


def test_form_feed_is_blank():
    assert [t[0] for t in tokens("pass in\f\npass")] == ["word", "word", "nl", "word"]


# The lexer has a findall() path for "plain" lines (no quotes, backslashes or digits right
# before ``({!#``) beside the general one: both must give the same tokens on such lines.
_PLAIN_ALPHABET = "ab09 \t\f\r\v\x1c(){}<>!=/#,-:.$_\n\xa0\u0663"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_PLAIN_ALPHABET, max_size=40))
def test_plain_line_path_gives_the_general_paths_tokens(text):
    from pfha.conf.lexer import _NOT_PLAIN_RE

    text = text.split("\n")[0] + "\n"
    assume(_NOT_PLAIN_RE.search(text) is None)
    plain, general = Lexer("", "t.conf", {}), Lexer("", "t.conf", {})
    plain._tokenize_plain(text, 1)
    general._tokenize(text, 1)
    as_tuples = lambda lx: [(t.kind, t.value, t.line, t.number) for t in lx._tokens]  # noqa: E731
    assert as_tuples(plain) == as_tuples(general)


def test_lines_the_plain_path_cannot_take_go_the_general_way():
    # a digit word before "(" is a word, not a number; quotes and continuations
    assert tokens("a 12(b)\n") == [("word", "a", 1), ("word", "12", 1), ("(", "(", 1), ("word", "b", 1), (")", ")", 1), ("nl", "\n", 1)]
    assert tokens('x "a b" \\\n -3 ,\n') == [("word", "x", 1), ("string", "a b", 1), ("number", "-3", 2), (",", ",", 2), ("nl", "\n", 2)]
