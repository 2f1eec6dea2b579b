"""Label selectors as apimachinery parses and matches them (k8s.io/apimachinery/pkg/labels), and what the adapter
refuses: hostile text (quotes, newlines, ``"}``, regex metacharacters), oversized selectors, bad keys and values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_adapter.selectors import (
    MAX_REQUIREMENTS,
    MAX_SELECTOR_CHARS,
    Op,
    SelectorError,
    parse_selector,
)

LABELS = {"autoscaler": "llama", "pool": "prefill", "tier": "3", "app.kubernetes.io/name": "vllm", "empty": ""}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("", True),
        ("autoscaler=llama", True),
        ("autoscaler==llama", True),
        ("autoscaler = llama , pool = prefill", True),
        ("autoscaler=llama\n,\tpool=prefill", True),  # CR, LF and tab are whitespace between tokens
        ("autoscaler=llama,pool=decode", False),
        ("autoscaler!=llama", False),
        ("missing!=x", True),  # a missing label satisfies != and notin
        ("pool in (prefill,decode)", True),
        ("pool in (decode)", False),
        ("pool notin (decode)", True),
        ("missing notin (a)", True),
        ("missing in (a)", False),
        ("pool", True),
        ("missing", False),
        ("!missing", True),
        ("!pool", False),
        ("tier>2", True),
        ("tier<3", False),
        ("tier>-1", True),
        ("autoscaler>1", False),  # not an integer: Gt/Lt do not match
        ("missing<5", False),
        ("app.kubernetes.io/name=vllm", True),
        ("empty=", True),  # an empty value is a value
        ("empty in (,x)", True),
        ("empty in (,)", True),
        ("pool in (x,)", False),
        ("autoscaler=llama,autoscaler!=other", True),
    ],
)
def test_matching_follows_apimachinery(text: str, matches: bool) -> None:
    assert parse_selector(text).matches(LABELS) is matches


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('autoscaler="llama"', "invalid label value"),  # quotes are not part of the syntax
        ("autoscaler=llama\"}", "invalid label value"),
        ('autoscaler=llama"} or vector(1) #', "invalid label value"),
        ("autoscaler=ll\nama", "expected ',' or the end"),  # a newline inside a value splits it
        ("autoscaler=.*", "invalid label value"),
        ("autoscaler=~llama", "invalid label value"),
        ("autoscaler in (llama|other)", "invalid label value"),
        ("autoscaler=lla[m]a", "invalid label value"),
        ("autoscaler=^llama$", "invalid label value"),
        ("autoscaler=llama)", "expected ',' or the end"),
        ("autoscaler in ()", "must not be empty"),
        ("autoscaler in (llama", "missing ')'"),
        ("autoscaler in llama", "expected '('"),
        ("autoscaler in (a b)", "expected a value or ','"),
        ("=llama", "expected a label key"),
        ("!", "expected a label key after '!'"),
        ("!=x", "expected a label key"),
        ("autoscaler llama", "expected one of"),
        ("autoscaler>x", "need an integer"),
        ("autoscaler>1.5", "need an integer"),
        ("autoscaler=llama,", "expected a label key"),
        (",", "expected a label key"),
        ("a" * 64 + "=x", "invalid label key"),
        ("x=" + "a" * 64, "invalid label value"),
        ("Foo.Com/name=x", "prefix must be a DNS-1123 subdomain"),
        ("/name=x", "prefix must be a DNS-1123 subdomain"),
        ("-a=x", "invalid label key"),
        ("autoscaler=lläma", "invalid label value"),
        ("autoscaler=llama;drop", "invalid label value"),
        ("autoscaler=llama\x00", "invalid label value"),
    ],
)
def test_invalid_selectors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(SelectorError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_selector(text)


def test_size_limits() -> None:
    fits = ",".join(f"k{i}=v" for i in range(MAX_REQUIREMENTS))
    assert len(parse_selector(fits).requirements) == MAX_REQUIREMENTS
    with pytest.raises(SelectorError, match=f"more than {MAX_REQUIREMENTS} requirements"):
        parse_selector(fits + ",extra=v")
    with pytest.raises(SelectorError, match=f"the limit is {MAX_SELECTOR_CHARS}"):
        parse_selector("a=b," * (MAX_SELECTOR_CHARS // 4) + "c=d")
    with pytest.raises(SelectorError, match="more than 64 values"):
        parse_selector("a in (" + ",".join(f"v{i}" for i in range(65)) + ")")


def test_required_values_pin_the_candidates() -> None:
    sel = parse_selector("autoscaler in (a,b,c),autoscaler!=c,pool=prefill,autoscaler in (b,c,d)")
    assert sel.required_values("autoscaler") == frozenset({"b", "c"})
    assert sel.required_values("pool") == frozenset({"prefill"})
    assert sel.required_values("other") is None
    assert parse_selector("!autoscaler").required_values("autoscaler") is None
    assert [r.op for r in parse_selector("a,!b,c>1,d<2,e==f").requirements] == [
        Op.EXISTS, Op.DOES_NOT_EXIST, Op.GREATER_THAN, Op.LESS_THAN, Op.DOUBLE_EQUALS]  # fmt: skip


_key = st.from_regex(r"\A([a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?\.)?[a-z]([-a-z0-9_.]{0,10}[a-z0-9])?\Z")
_value = st.from_regex(r"\A([A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?)?\Z")


@st.composite
def _requirement(draw: st.DrawFn) -> str:
    key, op = draw(_key), draw(st.sampled_from(["=", "==", "!=", "in", "notin", "", "!", ">", "<"]))
    if op in ("in", "notin"):
        return f"{key} {op} ({','.join(draw(st.lists(_value.filter(bool), min_size=1, max_size=4)))})"
    if op in (">", "<"):
        return f"{key}{op}{draw(st.integers(-100, 100))}"
    if op == "!":
        return f"!{key}"
    return key if op == "" else f"{key}{op}{draw(_value)}"


@settings(max_examples=200, deadline=None)
@given(st.lists(_requirement(), min_size=0, max_size=6),
       st.dictionaries(_key, _value, max_size=4))  # fmt: skip
def test_valid_selectors_round_trip_and_match_the_same(terms: list[str], labels: dict[str, str]) -> None:
    sel = parse_selector(",".join(terms))
    again = parse_selector(str(sel))
    assert again == sel
    assert again.matches(labels) == sel.matches(labels) == all(parse_selector(t).matches(labels) for t in terms)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_any_text_parses_or_raises_selector_error(text: str) -> None:
    try:
        sel = parse_selector(text)
    except SelectorError as exc:
        assert str(exc)
        return
    for r in sel.requirements:  # whatever was accepted is made of valid keys and values only
        assert '"' not in r.key and all('"' not in v and "\n" not in v for v in r.values)
