"""Argo's success/failure conditions, evaluated as expr-lang (github.com/expr-lang/expr) evaluates them.

The parser follows expr-lang's own (`parser/parser.go`, `parser/operator/operator.go`): precedence climbing
over the same operator table, from loosest to tightest

    |  (pipe)  <  or ||  <  and &&  <  == != < > <= >= in matches contains startsWith endsWith  <  ..
       <  + -  <  * / %  <  not !  (unary)  <  - +  (unary)  <  ** ^  (right-assoc)  <  ??

with comparisons chained (`a < b < c` is `a < b && b < c`), `not in` / `not contains` / ..., `??` that may
not be mixed with other operators without parentheses (expr refuses it), and the ternary `a ? b : c` at the
top of an expression. Closures as expr writes them: `all(result, {# < 1000})` or `all(result, # < 1000)`,
with `#`, `#index`, `#acc` (reduce) and `.field` for `#.field`. Builtins: `all any none one filter map count
find findIndex findLast findLastIndex sum mean median reduce`, `len max min abs ceil floor round int float
string trim upper lower split join keys values first last`, and Argo's own `asInt asFloat isNaN isInf isNil
default`. Literals: numbers (`1_000`, `0x1F`, `1e3`), strings ('..', "..", `raw`), true/false/nil, arrays,
maps `{a: 1}`; member access `a.b`, `a?.b`, `a[0]`, `a[-1]`, slices `a[1:3]`; ranges `1..3`.

Semantics of expr's runtime: `/` is always a float division (so `1 / 0` is `+Inf`), `%` needs integers,
`**` is a float, a missing map key is nil, `==` between different types is false while `<` between them is
an error, `and`/`or`/`not` need booleans. Nothing is ever passed to Python's `eval`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ExprError", "evaluate", "evaluate_condition", "parse"]


class ExprError(Exception):
    pass


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.(?![.A-Za-z_])[\d_]*)?(?:[eE][-+]?\d+)?|\.\d[\d_]*(?:[eE][-+]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<pointer>\#(?:index|acc)?)
  | (?P<op>\?\.|\?\?|\*\*|==|!=|<=|>=|&&|\|\||\.\.|[-+*/%<>!()\[\]{}.,?:|^])
  | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
)""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number, string, pointer, op, name, end
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

# expr-lang's parser/operator/operator.go: (precedence, right-associative).
BINARY: dict[str, tuple[int, bool]] = {
    "|": (0, False),
    "or": (10, False),
    "||": (10, False),
    "and": (15, False),
    "&&": (15, False),
    "==": (20, False),
    "!=": (20, False),
    "<": (20, False),
    ">": (20, False),
    ">=": (20, False),
    "<=": (20, False),
    "in": (20, False),
    "matches": (20, False),
    "contains": (20, False),
    "startsWith": (20, False),
    "endsWith": (20, False),
    "..": (25, False),
    "+": (30, False),
    "-": (30, False),
    "*": (60, False),
    "/": (60, False),
    "%": (60, False),
    "**": (100, True),
    "^": (100, True),
    "??": (500, False),
}
UNARY = {"not": 50, "!": 50, "-": 90, "+": 90}
_COMPARISON = 20
_NEGATABLE = ("contains", "matches", "startsWith", "endsWith", "in")
# Builtins whose second argument is a closure over `#` (expr's predicate builtins).
_PREDICATES = {
    "all",
    "any",
    "none",
    "one",
    "filter",
    "map",
    "count",
    "find",
    "findIndex",
    "findLast",
    "findLastIndex",
    "sum",
    "mean",
    "median",
    "reduce",
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0  # inside a closure: `#` and `.field` are allowed

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def is_op(self, value: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token.kind == "op" and token.value == value

    def expect(self, value: str) -> None:
        token = self.take()
        if token.value != value or token.kind not in ("op", "name"):
            raise ExprError(f"expected {value!r} at {token.pos} in {self.text!r}, got {token.value or 'end'!r}")

    def fail(self, token: Token, what: str = "") -> ExprError:
        return ExprError(
            f"{what or 'unexpected'} {token.value or 'end of expression'!r} at {token.pos} in {self.text!r}"
        )

    def parse(self) -> Node:
        node = self.expression(0)
        if self.peek().kind != "end":
            raise self.fail(self.peek())
        return node

    def operator(self) -> tuple[str, bool] | None:
        """The binary operator at the cursor (and whether it is negated: `not in`), without taking it."""
        token = self.peek()
        if token.kind == "name" and token.value == "not":
            following = self.peek(1)
            if following.kind in ("name", "op") and following.value in _NEGATABLE:
                return following.value, True
            return None
        if token.kind in ("op", "name") and token.value in BINARY:
            return token.value, False
        return None

    def expression(self, precedence: int) -> Node:
        """expr-lang's parseExpression: a primary, then operators at least as tight as `precedence`."""
        left = self.primary()
        previous = ""
        while True:
            found = self.operator()
            if found is None:
                break
            op, negate = found
            op_precedence, right_assoc = BINARY[op]
            if op_precedence < precedence:
                break
            token = self.take()
            if negate:
                self.take()
            if previous == "??" and op != "??":
                raise ExprError(
                    f"operator ({op}) and coalesce expressions (??) cannot be mixed; wrap either by parentheses "
                    f"(at {token.pos} in {self.text!r})"
                )
            if op == "|":
                left = self.pipe(left)
            elif op_precedence == _COMPARISON:
                left = self.comparison(left, op, negate)
            else:
                right = self.expression(op_precedence if right_assoc else op_precedence + 1)
                left = ("bin", op, left, right)
            previous = op
        if precedence == 0 and self.is_op("?"):
            self.take()
            yes = self.expression(0)
            self.expect(":")
            no = self.expression(0)
            left = ("if", left, yes, no)
        return left

    def comparison(self, left: Node, op: str, negate: bool) -> Node:
        """`a < b < c` is `a < b && b < c` (expr's parseComparison)."""
        root: Node | None = None
        while True:
            right = self.expression(_COMPARISON + 1)
            node: Node = ("bin", op, left, right)
            if negate:
                node = ("unary", "not", node)
            root = node if root is None else ("bin", "&&", root, node)
            left = right
            found = self.operator()
            if found is None or BINARY[found[0]][0] != _COMPARISON:
                return root
            op, negate = found
            self.take()
            if negate:
                self.take()

    def pipe(self, left: Node) -> Node:
        """`x | f(args)` is `f(x, args)`."""
        name = self.take()
        if name.kind != "name" or not self.is_op("("):
            raise self.fail(name, "expected a function call after |, got")
        self.take()
        args = self.arguments(name.value, first=left)
        return ("call", name.value, tuple(args))

    def arguments(self, function: str, first: Node | None = None) -> list[Node]:
        args: list[Node] = [first] if first is not None else []
        while not self.is_op(")"):
            if args and function in _PREDICATES and len(args) == 1:
                args.append(self.closure())
            else:
                args.append(self.expression(0))
            if self.is_op(","):
                self.take()
            elif not self.is_op(")"):
                raise self.fail(self.peek(), "expected ',' or ')', got")
        self.take()
        return args

    def closure(self) -> Node:
        braces = self.is_op("{")
        if braces:
            self.take()
        self.depth += 1
        body = self.expression(0)
        self.depth -= 1
        if braces:
            self.expect("}")
        return ("closure", body)

    def primary(self) -> Node:
        token = self.peek()
        if (token.kind == "op" and token.value in ("!", "-", "+")) or (token.kind == "name" and token.value == "not"):
            self.take()
            operand = self.expression(UNARY[token.value])
            return self.postfix(("unary", token.value, operand))
        if self.is_op("("):
            self.take()
            node = self.expression(0)
            self.expect(")")
            return self.postfix(node)
        if self.depth > 0 and token.kind == "pointer":
            self.take()
            return self.postfix(("var", token.value))
        if self.depth > 0 and self.is_op(".") and self.peek(1).kind == "name":
            self.take()
            name = self.take()
            return self.postfix(("member", ("var", "#"), ("lit", name.value), False))
        return self.postfix(self.secondary())

    def secondary(self) -> Node:
        token = self.take()
        if token.kind == "number":
            return ("lit", _number_literal(token.value))
        if token.kind == "string":
            return ("lit", _unquote(token.value))
        if token.kind == "op" and token.value == "[":
            items: list[Node] = []
            while not self.is_op("]"):
                items.append(self.expression(0))
                if self.is_op(","):
                    self.take()
                elif not self.is_op("]"):
                    raise self.fail(self.peek(), "expected ',' or ']', got")
            self.take()
            return ("list", tuple(items))
        if token.kind == "op" and token.value == "{":
            pairs: list[tuple[Node, Node]] = []
            while not self.is_op("}"):
                key_token = self.take()
                if key_token.kind in ("name", "number", "string"):
                    key: Node = ("lit", key_token.value if key_token.kind == "name" else _unquote(key_token.value))
                    if key_token.kind == "number":
                        key = ("lit", _number_literal(key_token.value))
                elif key_token.kind == "op" and key_token.value == "(":
                    key = self.expression(0)
                    self.expect(")")
                else:
                    raise self.fail(key_token, "expected a map key, got")
                self.expect(":")
                pairs.append((key, self.expression(0)))
                if self.is_op(","):
                    self.take()
                elif not self.is_op("}"):
                    raise self.fail(self.peek(), "expected ',' or '}', got")
            self.take()
            return ("map", tuple(pairs))
        if token.kind == "name":
            if token.value in ("true", "false"):
                return ("lit", token.value == "true")
            if token.value == "nil":
                return ("lit", None)
            if self.is_op("("):
                self.take()
                return ("call", token.value, tuple(self.arguments(token.value)))
            return ("var", token.value)
        if token.kind == "pointer":
            raise ExprError(f"{token.value} is only allowed inside a closure (at {token.pos} in {self.text!r})")
        raise self.fail(token)

    def postfix(self, node: Node) -> Node:
        while True:
            token = self.peek()
            if token.kind == "op" and token.value in (".", "?."):
                self.take()
                name = self.take()
                if name.kind != "name":
                    raise ExprError(f"expected a field name at {name.pos} in {self.text!r}")
                if self.is_op("("):
                    raise ExprError(f"{name.value}(): methods are not callable here (at {name.pos} in {self.text!r})")
                node = ("member", node, ("lit", name.value), token.value == "?.")
            elif token.kind == "op" and token.value == "[":
                self.take()
                lower: Node | None = None
                if not self.is_op(":"):
                    lower = self.expression(0)
                if self.is_op(":"):
                    self.take()
                    upper = None if self.is_op("]") else self.expression(0)
                    self.expect("]")
                    node = ("slice", node, lower, upper)
                else:
                    self.expect("]")
                    node = ("member", node, lower, False)
            else:
                return node


def _number_literal(text: str) -> int | float:
    text = text.replace("_", "")
    if text[:2] in ("0x", "0X"):
        return int(text, 16)
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0", "a": "\a", "b": "\b"}


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    if literal.startswith("`"):
        return body

    def escape(m: re.Match[str]) -> str:
        if m.group(1):
            return chr(int(m.group(1), 16))
        return _ESCAPES.get(m.group(2), m.group(2))

    return re.sub(r"\\(?:u([0-9a-fA-F]{4})|(.))", escape, body)


def parse(text: str) -> Node:
    return _Parser(text).parse()


# --- values ---------------------------------------------------------------------------------------


def _type(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "string", list: "array", dict: "map"}.get(
        type(value), type(value).__name__
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any, what: str) -> int | float:
    if not _is_number(value):
        raise ExprError(f"{what}: expected a number, got {_type(value)} {value!r}")
    return value  # type: ignore[no-any-return]


def _truth(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ExprError(f"{what}: expected a boolean, got {_type(value)} {value!r}")
    return value


def _equal(a: Any, b: Any) -> bool:
    """expr's runtime.Equal: numbers by value across int and float, otherwise same type and value."""
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _less(op: str, a: Any, b: Any) -> bool:
    if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
        raise ExprError(f"invalid operation: {_type(a)} {op} {_type(b)}: expected a number")
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ExprError(f"asInt: cannot convert {value!r}")
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ExprError(f"asInt: cannot convert {value!r}")
        return int(value)
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
    if isinstance(value, str | list | dict):
        return len(value)
    raise ExprError(f"len: invalid argument of type {_type(value)}")


def _extremum(name: str, pick: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        values = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
        if not values:
            raise ExprError(f"{name}: no values")
        for v in values:
            _number(v, name)
        return pick(values)

    return run


def _numbers(name: str, values: Any) -> list[int | float]:
    if not isinstance(values, list):
        raise ExprError(f"{name}: expected an array, got {_type(values)}")
    return [_number(v, name) for v in values]


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _round(value: Any) -> float:
    x = float(_number(value, "round"))
    return float(math.floor(x + 0.5)) if x >= 0 else float(-math.floor(-x + 0.5))  # half away from zero, as Go


def _split(s: Any, sep: Any, n: Any = -1) -> list[str]:
    if not isinstance(s, str) or not isinstance(sep, str):
        raise ExprError("split: expected strings")
    return s.split(sep) if n < 0 else s.split(sep, max(0, int(n) - 1))


def _join(values: Any, sep: Any = "") -> str:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values) or not isinstance(sep, str):
        raise ExprError("join: expected an array of strings")
    return sep.join(values)


def _first(values: Any) -> Any:
    if not isinstance(values, list):
        raise ExprError(f"first: expected an array, got {_type(values)}")
    return values[0] if values else None


def _last(values: Any) -> Any:
    if not isinstance(values, list):
        raise ExprError(f"last: expected an array, got {_type(values)}")
    return values[-1] if values else None


def _map_of(name: str, value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ExprError(f"{name}: expected a map, got {_type(value)}")
    return value


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": _length,
    "asInt": _as_int,
    "asFloat": _as_float,
    "int": _as_int,
    "float": _as_float,
    "string": _string,
    "abs": lambda v: abs(_number(v, "abs")),
    "ceil": lambda v: float(math.ceil(_number(v, "ceil"))),
    "floor": lambda v: float(math.floor(_number(v, "floor"))),
    "round": _round,
    "max": _extremum("max", max),
    "min": _extremum("min", min),
    "trim": lambda s, chars=None: s.strip(chars) if isinstance(s, str) else _string(s).strip(),
    "upper": lambda s: _string(s).upper(),
    "lower": lambda s: _string(s).lower(),
    "split": _split,
    "join": _join,
    "keys": lambda m: list(_map_of("keys", m)),
    "values": lambda m: list(_map_of("values", m).values()),
    "first": _first,
    "last": _last,
    "isNaN": lambda v: isinstance(v, float) and math.isnan(v),
    "isInf": lambda v, sign=0: isinstance(v, float) and math.isinf(v) and (sign == 0 or (v > 0) == (sign > 0)),
    "isNil": lambda v: v is None,
    "default": lambda v, d: d if v is None or v == "" else v,
}


# --- evaluation -----------------------------------------------------------------------------------


def _eval(node: Node, env: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "list":
        return [_eval(n, env) for n in node[1]]
    if kind == "map":
        return {_eval(k, env): _eval(v, env) for k, v in node[1]}
    if kind == "var":
        if node[1] not in env:
            raise ExprError(f"unknown name {node[1]}")
        return env[node[1]]
    if kind == "member":
        return _member(_eval(node[1], env), _eval(node[2], env), optional=node[3])
    if kind == "slice":
        return _slice(_eval(node[1], env), node[2] and _eval(node[2], env), node[3] and _eval(node[3], env))
    if kind == "call":
        return _call(node[1], node[2], env)
    if kind == "unary":
        value = _eval(node[2], env)
        if node[1] in ("!", "not"):
            return not _truth(value, node[1])
        number = _number(value, node[1])
        return -number if node[1] == "-" else number
    if kind == "if":
        return _eval(node[2] if _truth(_eval(node[1], env), "ternary condition") else node[3], env)
    if kind == "bin":
        return _binary(node[1], node[2], node[3], env)
    raise ExprError(f"a closure is only allowed as a builtin's argument ({kind})")


def _member(target: Any, key: Any, *, optional: bool) -> Any:
    if target is None:
        if optional:
            return None
        raise ExprError(f"cannot fetch {key} from nil")
    if isinstance(target, dict):
        if isinstance(key, list | dict):
            raise ExprError(f"cannot index a map with {type(key).__name__}")
        return target.get(key)  # expr: a missing map key is nil
    if isinstance(target, list | str) and isinstance(key, int) and not isinstance(key, bool):
        index = key + len(target) if key < 0 else key
        if not 0 <= index < len(target):
            raise ExprError(f"index out of range: {key} (array of length {len(target)})")
        return target[index]
    raise ExprError(f"cannot access {key!r} on {_type(target)}")


def _slice(target: Any, lower: Any, upper: Any) -> Any:
    if not isinstance(target, list | str):
        raise ExprError(f"cannot slice {_type(target)}")
    n = len(target)

    def bound(value: Any, default: int) -> int:
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise ExprError(f"slice bounds must be integers, got {value!r}")
        return max(0, min(n, value + n if value < 0 else value))

    return target[bound(lower, 0) : bound(upper, n)]


def _call(name: str, arg_nodes: tuple[Node, ...], env: Mapping[str, Any]) -> Any:
    if name in _PREDICATES:
        return _predicate(name, arg_nodes, env)
    function = _FUNCTIONS.get(name)
    if function is None:
        raise ExprError(f"unknown function {name}()")
    args = [_eval(a, env) for a in arg_nodes]
    try:
        return function(*args)
    except (TypeError, ValueError, AttributeError):
        raise ExprError(f"{name}(): invalid arguments {args!r}") from None


def _predicate(name: str, arg_nodes: tuple[Node, ...], env: Mapping[str, Any]) -> Any:
    if not arg_nodes:
        raise ExprError(f"{name}(): expected an array")
    items = _eval(arg_nodes[0], env)
    if isinstance(items, dict):
        items = list(items.values())
    if not isinstance(items, list):
        raise ExprError(f"{name}(): expected an array, got {_type(items)}")
    closure = arg_nodes[1] if len(arg_nodes) > 1 else None
    if closure is not None and closure[0] != "closure":
        raise ExprError(f"{name}(): the second argument must be a closure")
    if name in ("sum", "mean", "median") and closure is None:
        values = _numbers(name, items)
    elif name == "count" and closure is None:
        return sum(1 for x in items if _truth(x, "count"))
    elif closure is None:
        raise ExprError(f"{name}(): expected a predicate, like {name}(array, {{# > 0}})")

    def apply(x: Any, i: int, extra: Mapping[str, Any] | None = None) -> Any:
        assert closure is not None
        return _eval(closure[1], {**env, "#": x, "#index": i, **(extra or {})})

    def test(x: Any, i: int) -> bool:
        return _truth(apply(x, i), name)

    if name == "all":
        return all(test(x, i) for i, x in enumerate(items))
    if name == "any":
        return any(test(x, i) for i, x in enumerate(items))
    if name == "none":
        return not any(test(x, i) for i, x in enumerate(items))
    if name == "one":
        return sum(1 for i, x in enumerate(items) if test(x, i)) == 1
    if name == "filter":
        return [x for i, x in enumerate(items) if test(x, i)]
    if name == "map":
        return [apply(x, i) for i, x in enumerate(items)]
    if name == "count":
        return sum(1 for i, x in enumerate(items) if test(x, i))
    if name in ("find", "findIndex"):
        for i, x in enumerate(items):
            if test(x, i):
                return x if name == "find" else i
        return None if name == "find" else -1
    if name in ("findLast", "findLastIndex"):
        for i in range(len(items) - 1, -1, -1):
            if test(items[i], i):
                return items[i] if name == "findLast" else i
        return None if name == "findLast" else -1
    if name == "reduce":
        if not items and len(arg_nodes) < 3:
            raise ExprError("reduce(): empty array without an initial value")
        acc = _eval(arg_nodes[2], env) if len(arg_nodes) > 2 else items[0]
        for i, x in enumerate(items if len(arg_nodes) > 2 else items[1:]):
            acc = apply(x, i, {"#acc": acc})
        return acc
    if closure is not None:
        values = [_number(apply(x, i), name) for i, x in enumerate(items)]
    if name == "sum":
        return sum(values)
    if not values:
        raise ExprError(f"{name}(): empty array")
    if name == "mean":
        return sum(values) / len(values)
    return float(statistics.median(values))


def _binary(op: str, left: Node, right: Node, env: Mapping[str, Any]) -> Any:
    if op in ("and", "&&", "or", "||"):
        a = _truth(_eval(left, env), op)
        if (op in ("and", "&&")) != a:
            return a
        return _truth(_eval(right, env), op)
    if op == "??":
        a = _eval(left, env)
        return _eval(right, env) if a is None else a
    a, b = _eval(left, env), _eval(right, env)
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op in ("<", "<=", ">", ">="):
        return _less(op, a, b)
    if op == "in":
        if isinstance(b, dict):
            if isinstance(a, list | dict):
                raise ExprError(
                    f"in: a map key cannot be an {_type(a)}" if _type(a) == "array" else "in: a map key cannot be a map"
                )
            return a in b
        if isinstance(b, list):
            return any(_equal(a, x) for x in b)
        raise ExprError(f"in: cannot look for {a!r} in {_type(b)}")
    if op in ("contains", "startsWith", "endsWith", "matches"):
        if not isinstance(a, str) or not isinstance(b, str):
            raise ExprError(f"{op}: expected strings, got {_type(a)} and {_type(b)}")
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
    if op == "..":
        lo, hi = _number(a, op), _number(b, op)
        if not isinstance(lo, int) or not isinstance(hi, int):
            raise ExprError("..: expected integers")
        if hi - lo > 100_000:
            raise ExprError("..: range too large")
        return list(range(lo, hi + 1))
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    if op == "+" and isinstance(a, list) and isinstance(b, list):
        return a + b
    x, y = _number(a, op), _number(b, op)
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op in ("**", "^"):
        try:
            return float(x) ** float(y)
        except (OverflowError, ZeroDivisionError):
            raise ExprError(f"{op}: out of range") from None
    if op == "/":
        if y == 0:  # Go's float division
            return math.nan if x == 0 else math.copysign(math.inf, x) * math.copysign(1.0, y)
        return x / y
    if isinstance(x, float) or isinstance(y, float):
        raise ExprError("%: expected integers")
    if y == 0:
        raise ExprError("%: integer divide by zero")
    return int(math.fmod(x, y))  # Go's remainder keeps the dividend's sign


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
