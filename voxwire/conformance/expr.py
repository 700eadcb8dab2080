"""Sizes and times in case files: integers or small expressions over the server's limits.

``"max_chunk_bytes + frame"``, ``"idle_timeout_ms * 6 / 10"``: names, integers, ``+ - * /``
and parentheses, nothing else (parsed with ``ast``, never ``eval``). Division is integer
division. A case's ``when`` may compare two expressions (``a > b`` is 1 or 0).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

_COMPARE = {
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
}
_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a // b,
    ast.FloorDiv: lambda a, b: a // b,
}


class ExprError(ValueError):
    """An expression that is malformed or names something unknown."""


def evaluate(value: int | str, names: Mapping[str, int]) -> int:
    """The integer ``value`` stands for. Raises ExprError."""
    if isinstance(value, bool):
        raise ExprError(f"expected a number or an expression, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        tree = ast.parse(value.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse {value!r}: {exc.msg}") from exc
    return _eval(tree.body, names, value)


_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Load, ast.USub)
_ALLOWED_OPS = (*_OPS, *_COMPARE)


def names_in(value: int | str) -> set[str]:
    """The names an expression uses (to check case files without a server). Raises ExprError
    for anything but integers, names, ``+ - * /``, one comparison and parentheses."""
    if isinstance(value, int):
        return set()
    try:
        tree = ast.parse(value.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse {value!r}: {exc.msg}") from exc
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            continue
        if not isinstance(node, _ALLOWED) and type(node) not in _ALLOWED_OPS:
            raise ExprError(
                f"{value!r}: only integers, names, + - * /, one comparison and parentheses "
                "are allowed"
            )
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def _eval(node: ast.AST, names: Mapping[str, int], source: str) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ExprError(f"unknown name {node.id!r} in {source!r}; known: {sorted(names)}")
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left = _eval(node.left, names, source)
        right = _eval(node.right, names, source)
        if isinstance(node.op, ast.Div | ast.FloorDiv) and right == 0:
            raise ExprError(f"division by zero in {source!r}")
        return int(_OPS[type(node.op)](left, right))
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        left = _eval(node.left, names, source)
        right = _eval(node.comparators[0], names, source)
        return int(_COMPARE[type(node.ops[0])](left, right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, names, source)
    raise ExprError(
        f"{source!r}: only integers, names, + - * /, one comparison and parentheses are allowed"
    )
