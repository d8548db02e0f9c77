"""A safe evaluator for the expression language of Argo's success/failure conditions (expr-lang subset).

Supported: literals (numbers, 'strings', "strings", true, false, nil, [lists]), `result` and member or
index access (`result.major`, `result[0]`, `result['key']`), `not`/`!`, unary minus, `* / %`,
`+ -`, comparisons, `in`/`not in`, `contains`, `startsWith`, `endsWith`, `matches`, `and`/`&&`,
`or`/`||`, the ternary `a ? b : c`, and Argo's functions `len`, `asInt`, `asFloat`, `isNaN`, `isInf`,
`isNil`, `default`, plus `int`, `float`, `string`, `abs`, `all`, `any`. A tokenizer and a precedence
climbing parser build a tree that is walked: nothing is ever passed to Python's `eval`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ExprError", "evaluate", "evaluate_condition", "parse"]


class ExprError(Exception):
    pass


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?|\.\d+)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>\?\.|\?\?|==|!=|<=|>=|&&|\|\||[-+*/%<>!()\[\].,?:])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
)""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number, string, op, name, end
    value: str
    pos: int


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExprError(f"unexpected character {text[pos:].lstrip()[:1]!r} at {pos} in {text!r}")
        kind = m.lastgroup or ""
        out.append(Token(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    out.append(Token("end", "", len(text)))
    return out


# A node is a tuple: (kind, ...). Kept as plain tuples so the tree is trivially immutable.
Node = tuple[Any, ...]

_BINARY: dict[str, int] = {
    "??": 1,
    "or": 2,
    "||": 2,
    "and": 3,
    "&&": 3,
    "==": 4,
    "!=": 4,
    "<": 5,
    "<=": 5,
    ">": 5,
    ">=": 5,
    "in": 5,
    "not in": 5,
    "contains": 5,
    "startsWith": 5,
    "endsWith": 5,
    "matches": 5,
    "+": 6,
    "-": 6,
    "*": 7,
    "/": 7,
    "%": 7,
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def expect(self, value: str) -> None:
        token = self.take()
        if token.value != value or token.kind not in ("op", "name"):
            raise ExprError(f"expected {value!r} at {token.pos} in {self.text!r}, got {token.value or 'end'!r}")

    def parse(self) -> Node:
        node = self.ternary()
        if self.peek().kind != "end":
            token = self.peek()
            raise ExprError(f"unexpected {token.value!r} at {token.pos} in {self.text!r}")
        return node

    def ternary(self) -> Node:
        cond = self.binary(1)
        if self.peek().value == "?" and self.peek().kind == "op":
            self.take()
            yes = self.ternary()
            self.expect(":")
            no = self.ternary()
            return ("if", cond, yes, no)
        return cond

    def binary_op(self) -> str | None:
        token = self.peek()
        if token.kind == "name" and token.value == "not" and self.peek(1).value == "in":
            return "not in"
        if token.kind in ("op", "name") and token.value in _BINARY:
            return token.value
        return None

    def binary(self, min_prec: int) -> Node:
        left = self.unary()
        while True:
            op = self.binary_op()
            if op is None or _BINARY[op] < min_prec:
                return left
            self.take()
            if op == "not in":
                self.take()
            right = self.binary(_BINARY[op] + 1)
            left = ("bin", op, left, right)

    def unary(self) -> Node:
        token = self.peek()
        if (token.kind == "op" and token.value in ("!", "-", "+")) or (token.kind == "name" and token.value == "not"):
            self.take()
            return ("unary", token.value, self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            token = self.peek()
            if token.kind == "op" and token.value in (".", "?."):
                self.take()
                name = self.take()
                if name.kind != "name":
                    raise ExprError(f"expected a field name at {name.pos} in {self.text!r}")
                node = ("member", node, ("lit", name.value), token.value == "?.")
            elif token.kind == "op" and token.value == "[":
                self.take()
                index = self.ternary()
                self.expect("]")
                node = ("member", node, index, False)
            else:
                return node

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "number":
            text = token.value
            return ("lit", float(text) if any(c in text for c in ".eE") else int(text))
        if token.kind == "string":
            return ("lit", _unquote(token.value))
        if token.kind == "op" and token.value == "(":
            node = self.ternary()
            self.expect(")")
            return node
        if token.kind == "op" and token.value == "[":
            items: list[Node] = []
            while self.peek().value != "]":
                items.append(self.ternary())
                if self.peek().value == ",":
                    self.take()
                elif self.peek().value != "]":
                    raise ExprError(f"expected ',' or ']' at {self.peek().pos} in {self.text!r}")
            self.take()
            return ("list", tuple(items))
        if token.kind == "name":
            if token.value in ("true", "false"):
                return ("lit", token.value == "true")
            if token.value in ("nil", "null"):
                return ("lit", None)
            if self.peek().value == "(" and self.peek().kind == "op":
                self.take()
                args: list[Node] = []
                while self.peek().value != ")":
                    args.append(self.ternary())
                    if self.peek().value == ",":
                        self.take()
                    elif self.peek().value != ")":
                        raise ExprError(f"expected ',' or ')' at {self.peek().pos} in {self.text!r}")
                self.take()
                return ("call", token.value, tuple(args))
            return ("var", token.value)
        raise ExprError(f"unexpected {token.value or 'end of expression'!r} at {token.pos} in {self.text!r}")


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def parse(text: str) -> Node:
    return _Parser(text).parse()


def _number(value: Any, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExprError(f"{what}: expected a number, got {value!r}")
    return value


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ExprError(f"asInt: cannot convert {value!r}")
    try:
        return int(value) if not isinstance(value, str) else int(value.strip())
    except (TypeError, ValueError):
        raise ExprError(f"asInt: cannot convert {value!r}") from None


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ExprError(f"asFloat: cannot convert {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ExprError(f"asFloat: cannot convert {value!r}") from None


def _length(value: Any) -> int:
    if isinstance(value, str | list | dict | tuple):
        return len(value)
    raise ExprError(f"len: invalid argument {value!r}")


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": _length,
    "asInt": _as_int,
    "asFloat": _as_float,
    "int": _as_int,
    "float": _as_float,
    "string": lambda v: v if isinstance(v, str) else ("" if v is None else str(v)),
    "abs": lambda v: abs(_number(v, "abs")),
    "isNaN": lambda v: isinstance(v, float) and math.isnan(v),
    "isInf": lambda v: isinstance(v, float) and math.isinf(v),
    "isNil": lambda v: v is None,
    "default": lambda v, d: d if v is None or v == "" else v,
    "all": lambda xs: all(bool(x) for x in xs),
    "any": lambda xs: any(bool(x) for x in xs),
}


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return bool(_loose(a) == _loose(b))
    if op == "!=":
        return bool(_loose(a) != _loose(b))
    if isinstance(a, str) and isinstance(b, str):
        pass
    else:
        a, b = _number(a, op), _number(b, op)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _loose(value: Any) -> Any:
    # expr compares 1 == 1.0 as equal; Python already does. Booleans must not equal 1.
    return ("bool", value) if isinstance(value, bool) else value


def _eval(node: Node, env: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "list":
        return [_eval(n, env) for n in node[1]]
    if kind == "var":
        if node[1] not in env:
            raise ExprError(f"unknown name {node[1]!r}")
        return env[node[1]]
    if kind == "member":
        target = _eval(node[1], env)
        key = _eval(node[2], env)
        if target is None and node[3]:
            return None
        if isinstance(target, dict):
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ExprError(f"cannot index a map with {type(key).__name__}")
            return target.get(key)  # expr: a missing map key is nil
        if isinstance(target, list | str) and isinstance(key, int) and not isinstance(key, bool):
            try:
                return target[key]
            except IndexError:
                raise ExprError(f"index {key} out of range (len {len(target)})") from None
        raise ExprError(f"cannot access {key!r} on {type(target).__name__}")
    if kind == "call":
        name, args = node[1], [_eval(a, env) for a in node[2]]
        function = _FUNCTIONS.get(name)
        if function is None:
            raise ExprError(f"unknown function {name}()")
        try:
            return function(*args)
        except TypeError:
            raise ExprError(f"{name}(): wrong arguments {args!r}") from None
    if kind == "unary":
        value = _eval(node[2], env)
        if node[1] in ("!", "not"):
            if not isinstance(value, bool):
                raise ExprError(f"{node[1]}: expected a boolean, got {value!r}")
            return not value
        number = _number(value, node[1])
        return -number if node[1] == "-" else number
    if kind == "if":
        cond = _eval(node[1], env)
        if not isinstance(cond, bool):
            raise ExprError(f"ternary condition is not a boolean: {cond!r}")
        return _eval(node[2] if cond else node[3], env)
    if kind == "bin":
        return _binary(node[1], node[2], node[3], env)
    raise ExprError(f"bad node {kind}")


def _binary(op: str, left: Node, right: Node, env: Mapping[str, Any]) -> Any:
    if op in ("and", "&&", "or", "||"):
        a = _eval(left, env)
        if not isinstance(a, bool):
            raise ExprError(f"{op}: expected a boolean, got {a!r}")
        if (op in ("and", "&&")) != a:
            return a
        b = _eval(right, env)
        if not isinstance(b, bool):
            raise ExprError(f"{op}: expected a boolean, got {b!r}")
        return b
    if op == "??":
        a = _eval(left, env)
        return _eval(right, env) if a is None else a
    a, b = _eval(left, env), _eval(right, env)
    if op in ("==", "!=", "<", "<=", ">", ">="):
        return _compare(op, a, b)
    if op in ("in", "not in"):
        if not isinstance(b, list | dict | str) or (isinstance(b, str) and not isinstance(a, str)):
            raise ExprError(f"{op}: cannot look for {a!r} in {b!r}")
        if isinstance(b, dict) and isinstance(a, list | dict):
            raise ExprError(f"{op}: a map key cannot be a {type(a).__name__}")
        return (a in b) != (op == "not in")
    if op in ("contains", "startsWith", "endsWith", "matches"):
        if not isinstance(a, str) or not isinstance(b, str):
            raise ExprError(f"{op}: expected strings, got {a!r} and {b!r}")
        if op == "contains":
            return b in a
        if op == "startsWith":
            return a.startswith(b)
        if op == "endsWith":
            return a.endswith(b)
        try:
            return re.search(b, a) is not None
        except re.error as exc:
            raise ExprError(f"matches: bad pattern {b!r}: {exc}") from None
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    x, y = _number(a, op), _number(b, op)
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if y == 0:
        raise ExprError(f"{op}: division by zero")
    if op == "/":
        return x / y
    if isinstance(x, float) or isinstance(y, float):
        raise ExprError("%: expected integers")
    return x % y


def evaluate(text: str, env: Mapping[str, Any]) -> Any:
    try:
        return _eval(parse(text), env)
    except RecursionError:
        raise ExprError(f"expression nested too deeply: {text[:40]!r}...") from None


def evaluate_condition(text: str, result: Any) -> bool:
    """A success/failure condition over `result`; anything but a boolean is an error, as in Argo."""
    value = evaluate(text, {"result": result})
    if not isinstance(value, bool):
        raise ExprError(f"condition {text!r} returned {value!r}, not a boolean")
    return value
