"""Kubernetes label selectors (``a=b,c!=d,e in (x,y),f notin (z),g,!h,i>3``), parsed and matched by the rules of
apimachinery's ``labels.Parse`` and ``Requirement.Matches`` (k8s.io/apimachinery/pkg/labels/selector.go).

Keys are qualified names (an optional DNS-1123 subdomain prefix of at most 253 characters and ``/``, then a name
of at most 63 characters: ``[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?``); values are empty or such a name. ``>``
and ``<`` take one integer. Whitespace (space, tab, CR, LF) separates tokens, as in apimachinery. Unlike
apimachinery, a selector longer than ``MAX_SELECTOR_CHARS`` or with more than ``MAX_REQUIREMENTS`` terms is
refused: a request must not make the adapter spend unbounded work. Every refusal is a ``SelectorError`` whose
message names the offending term. A parsed selector only ever compares strings: nothing in it is interpreted as a
regular expression or pasted into a query language.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

MAX_SELECTOR_CHARS = 2048
MAX_REQUIREMENTS = 32
MAX_VALUES_PER_SET = 64
_NAME_MAX = 63
_PREFIX_MAX = 253
_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_WHITESPACE = " \t\r\n"
_SPECIAL = "=!(),<>"
_INT_RE = re.compile(r"^[+-]?[0-9]+$")


class SelectorError(ValueError):
    """The selector is not valid; the message says where and why."""


class Op(StrEnum):
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Op
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """``Requirement.Matches``: a missing label satisfies only ``!=``, ``notin`` and ``!key``."""
        present = self.key in labels
        if self.op in (Op.EQUALS, Op.DOUBLE_EQUALS, Op.IN):
            return present and labels[self.key] in self.values
        if self.op in (Op.NOT_EQUALS, Op.NOT_IN):
            return not present or labels[self.key] not in self.values
        if self.op is Op.EXISTS:
            return present
        if self.op is Op.DOES_NOT_EXIST:
            return not present
        if not present or not _INT_RE.match(labels[self.key]):
            return False
        have, want = int(labels[self.key]), int(next(iter(self.values)))
        return have > want if self.op is Op.GREATER_THAN else have < want

    def __str__(self) -> str:
        if self.op is Op.EXISTS:
            return self.key
        if self.op is Op.DOES_NOT_EXIST:
            return f"!{self.key}"
        if self.op in (Op.IN, Op.NOT_IN):
            listed = ",".join(sorted(self.values)) if self.values != {""} else ","  # "()" would be empty
            return f"{self.key} {self.op.value} ({listed})"
        sign = {Op.GREATER_THAN: ">", Op.LESS_THAN: "<"}.get(self.op, self.op.value)
        return f"{self.key}{sign}{next(iter(self.values))}"


@dataclass(frozen=True)
class Selector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def required_values(self, key: str) -> frozenset[str] | None:
        """The values ``key`` must have for a match (``=``, ``==``, ``in`` terms intersected), or None when the
        selector does not pin ``key``. Lets a lookup go straight to the candidates instead of scanning."""
        found: frozenset[str] | None = None
        for r in self.requirements:
            if r.key == key and r.op in (Op.EQUALS, Op.DOUBLE_EQUALS, Op.IN):
                found = r.values if found is None else found & r.values
        return found

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def validate_key(key: str) -> str:
    """apimachinery's ``IsQualifiedName`` for a label key; raises SelectorError."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > _PREFIX_MAX or not _DNS1123_SUBDOMAIN_RE.match(prefix)):
        raise SelectorError(
            f"invalid label key {key!r}: the prefix must be a DNS-1123 subdomain of at most {_PREFIX_MAX} "
            "characters (lower case alphanumerics, '-' and '.')"
        )
    if not name or len(name) > _NAME_MAX or not _NAME_RE.match(name):
        raise SelectorError(
            f"invalid label key {key!r}: the name must be 1 to {_NAME_MAX} characters, alphanumerics, '-', '_' "
            "or '.', starting and ending with an alphanumeric"
        )
    return key


def validate_value(value: str) -> str:
    """apimachinery's ``IsValidLabelValue``; raises SelectorError."""
    if value and (len(value) > _NAME_MAX or not _NAME_RE.match(value)):
        raise SelectorError(
            f"invalid label value {value!r}: at most {_NAME_MAX} characters, alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric (or empty)"
        )
    return value


def _tokens(text: str) -> list[str]:
    """apimachinery's lexer: special symbols (``!=``, ``==`` as one token), identifiers, whitespace dropped."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
        elif ch in _SPECIAL:
            pair = text[i : i + 2]
            if pair in ("!=", "=="):
                out.append(pair)
                i += 2
            else:
                out.append(ch)
                i += 1
        else:
            j = i
            while j < n and text[j] not in _WHITESPACE and text[j] not in _SPECIAL:
                j += 1
            out.append(text[i:j])
            i = j
    return out


def _is_ident(token: str | None) -> bool:
    return token is not None and token[0] not in _SPECIAL


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.pos += 1
        return token

    def expect_ident(self, what: str) -> str:
        token = self.take()
        if not _is_ident(token):
            raise SelectorError(f"expected {what}, found {_shown(token)}")
        assert token is not None
        return token

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            key = validate_key(self.expect_ident("a label key after '!'"))
            return Requirement(key, Op.DOES_NOT_EXIST)
        key = validate_key(self.expect_ident("a label key"))
        token = self.peek()
        if token is None or token == ",":
            return Requirement(key, Op.EXISTS)
        self.take()
        if token in ("=", "==", "!="):
            nxt = self.peek()
            value = "" if nxt is None or nxt == "," else self.expect_ident(f"a value after {key}{token}")
            return Requirement(key, Op(token), frozenset({validate_value(value)}))
        if token in (">", "<"):
            value = self.expect_ident(f"an integer after {key}{token}")
            if not _INT_RE.match(value):
                raise SelectorError(f"{key}{token}{value}: '>' and '<' need an integer value")
            return Requirement(key, Op.GREATER_THAN if token == ">" else Op.LESS_THAN, frozenset({value}))
        if token in ("in", "notin"):
            return Requirement(key, Op(token), self.value_set(key, token))
        raise SelectorError(
            f"after label key {key!r}: expected one of =, ==, !=, in, notin, >, < or ',', found {_shown(token)}"
        )

    def value_set(self, key: str, op: str) -> frozenset[str]:
        if self.take() != "(":
            raise SelectorError(f"{key} {op}: expected '(' before the values")
        values: list[str] = []
        expect_value = True
        while True:
            token = self.take()
            if token is None:
                raise SelectorError(f"{key} {op} (...: missing ')'")
            if token == ")":
                if expect_value and values:  # "(a,)" ends with an empty value, as apimachinery reads it
                    values.append("")
                break
            if token == ",":
                if expect_value:
                    values.append("")
                expect_value = True
                continue
            if not expect_value or not _is_ident(token):
                raise SelectorError(f"{key} {op} (...): expected a value or ',' or ')', found {_shown(token)}")
            values.append(validate_value(token))
            expect_value = False
            if len(values) > MAX_VALUES_PER_SET:
                raise SelectorError(f"{key} {op} (...): more than {MAX_VALUES_PER_SET} values")
        if not values:
            raise SelectorError(f"{key} {op} (): the set of values must not be empty")
        return frozenset(values)


def _shown(token: str | None) -> str:
    return "the end of the selector" if token is None else repr(token)


def parse_selector(text: str) -> Selector:
    """Parse a label selector string; raise SelectorError naming the problem. The empty string selects all."""
    if len(text) > MAX_SELECTOR_CHARS:
        raise SelectorError(f"selector is {len(text)} characters long; the limit is {MAX_SELECTOR_CHARS}")
    parser = _Parser(_tokens(text))
    requirements: list[Requirement] = []
    if parser.peek() is None:
        return Selector()
    while True:
        requirements.append(parser.requirement())
        if len(requirements) > MAX_REQUIREMENTS:
            raise SelectorError(f"more than {MAX_REQUIREMENTS} requirements")
        token = parser.take()
        if token is None:
            break
        if token != ",":
            raise SelectorError(f"after {requirements[-1]}: expected ',' or the end, found {_shown(token)}")
    return Selector(tuple(requirements))
