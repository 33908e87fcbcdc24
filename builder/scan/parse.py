"""One file, parsed with `ast` (never run): its import statements, each with the reach its
place in the file gives it, and the CUDA calls evaluated when the file is imported.

Trees are walked with explicit stacks: a 400-branch elif chain is 400 nested `If` nodes, too
deep for a recursive visitor.
"""

from __future__ import annotations

import ast
import io
import operator
import tokenize
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from builder.scan.model import Note, Reach, SyntaxProblem

# Handlers that swallow a failed import: the guarded import is optional.
_IMPORT_ERROR_CATCHERS = frozenset(
    {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
)
# Python 3.11 added `try: ... except* E:`, a node of its own.
_TRIES = tuple(getattr(ast, name) for name in ("Try", "TryStar") if hasattr(ast, name))


@dataclass(frozen=True)
class Statement:
    module: str  # as written after `import` / `from`, without the leading dots
    names: tuple[str, ...]  # the names of a from-import; () for `import x`
    level: int
    line: int
    reach: Reach  # from the file alone; the walk combines it with the file's own reach


@dataclass(frozen=True)
class CudaCall:
    line: int
    call: str
    context: str


@dataclass(frozen=True)
class Parsed:
    statements: tuple[Statement, ...]
    cuda: tuple[CudaCall, ...]


@dataclass(frozen=True)
class Target:
    """What the version and platform checks of a file are evaluated for."""

    python: tuple[int, int]
    sys_platform: str = "linux"
    os_name: str = "posix"
    system: str = "Linux"


def parse(source: bytes, rel: str, target: Target) -> Parsed | SyntaxProblem | Note:
    """A file's imports and CUDA calls, its syntax error, or a warning that it was not parsed."""
    try:
        text = _decode(source)
        with warnings.catch_warnings():  # invalid escapes and the like are not our findings
            warnings.simplefilter("ignore")
            tree = ast.parse(text, filename=rel)
    except UnicodeDecodeError as exc:
        reason = f"not valid {exc.encoding} text (byte {exc.start}: {exc.reason})"
        return Note("warning", f"{rel}: not parsed: {reason}")
    except SyntaxError as exc:
        return SyntaxProblem(rel, exc.lineno or 0, exc.msg)
    except ValueError as exc:  # null bytes, before Python 3.12
        return SyntaxProblem(rel, 0, str(exc))
    except (RecursionError, MemoryError) as exc:  # the parser's own limits
        reason = f"too deeply nested or too large for Python's parser ({type(exc).__name__})"
        return Note("warning", f"{rel}: not parsed: {reason}")
    try:
        return Parsed(tuple(imports(tree, target)), tuple(cuda_calls(tree)))
    except RecursionError:  # ast.walk is iterative, but a deep expression can still recurse
        return Note("warning", f"{rel}: not parsed: too deeply nested for the scan")


def _decode(source: bytes) -> str:
    """Source text in the encoding it declares (PEP 263), UTF-8 by default."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    except SyntaxError:  # undecodable first lines or an unknown codec: say where UTF-8 fails
        encoding = "utf-8"
    return source.decode(encoding)


# --- imports and their reach -------------------------------------------------------------------


def imports(tree: ast.Module, target: Target) -> list[Statement]:
    """A module's import statements with their reach within the file."""
    found: list[Statement] = []
    stack: list[tuple[ast.AST, Reach]] = [(tree, Reach.MODULE)]
    while stack:
        node, reach = stack.pop()
        found += _statements(node, reach)
        stack += reversed(_children(node, reach, target))
    return found


def _statements(node: ast.AST, reach: Reach) -> list[Statement]:
    if isinstance(node, ast.Import):
        return [Statement(alias.name, (), 0, node.lineno, reach) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        names = tuple(alias.name for alias in node.names)
        return [Statement(node.module or "", names, node.level, node.lineno, reach)]
    return []


def _children(node: ast.AST, reach: Reach, target: Target) -> list[tuple[ast.AST, Reach]]:
    """The nodes under `node`, each with the reach its imports get."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        # A try around the def does not guard the body: that runs later, when called (but a
        # def under TYPE_CHECKING or in a branch the target never takes is never called).
        lazy = Reach.GUARDED if reach is Reach.GUARDED else Reach.LAZY
        return [(child, lazy) for child in node.body]
    if isinstance(node, _TRIES):
        return _try_children(cast(ast.Try, node), reach)
    if isinstance(node, ast.If):
        taken = branch(node.test, target)
        if taken is not None:
            body, orelse = (reach, Reach.GUARDED) if taken else (Reach.GUARDED, reach)
            body, orelse = reach.through(body), reach.through(orelse)
            nodes: list[tuple[ast.AST, Reach]] = [(c, body) for c in node.body]
            return nodes + [(c, orelse) for c in node.orelse]
    return [(child, reach) for child in ast.iter_child_nodes(node)]


def _try_children(node: ast.Try, reach: Reach) -> list[tuple[ast.AST, Reach]]:
    catches = any(_catches_import_error(handler.type) for handler in node.handlers)
    guarded = reach.through(Reach.OPTIONAL) if catches else reach
    rest = [*node.handlers, *node.orelse, *node.finalbody]
    return [(child, guarded) for child in node.body] + [(child, reach) for child in rest]


def _catches_import_error(handler: ast.expr | None) -> bool:
    if handler is None:
        return True
    if isinstance(handler, ast.Tuple):
        return any(_catches_import_error(element) for element in handler.elts)
    return _last_name(handler) in _IMPORT_ERROR_CATCHERS


def _last_name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


def branch(test: ast.expr, target: Target) -> bool | None:
    """Whether an `if` test holds for the target: `TYPE_CHECKING` never does; version and
    platform checks (`sys.version_info >= (3, 11)`, `sys.platform == "win32"`, `os.name`,
    `platform.system()`) are evaluated; None for anything else (both branches may run)."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = branch(test.operand, target)
        return None if inner is None else not inner
    if isinstance(test, ast.BoolOp):
        values = [branch(value, target) for value in test.values]
        if isinstance(test.op, ast.And):
            return False if False in values else (None if None in values else True)
        return True if True in values else (None if None in values else False)
    if _last_name(test) == "TYPE_CHECKING":
        return False
    if isinstance(test, ast.Call):
        return _platform_call(test, target)
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        return _compare(test.left, test.ops[0], test.comparators[0], target)
    return None


_OPERATORS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _compare(left: ast.expr, op: ast.cmpop, right: ast.expr, target: Target) -> bool | None:
    value = _known_value(left, target)
    try:
        other = ast.literal_eval(right)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    compare = _OPERATORS.get(type(op))
    if value is None or compare is None or type(value) is not type(other):
        return None
    return bool(compare(value, other))


def _known_value(node: ast.expr, target: Target) -> object:
    """The target's value of `sys.version_info` (and its slices and fields), `sys.platform`,
    `os.name` or `platform.system()`; None for anything else."""
    version = (*target.python, 0)
    name = dotted(node)
    simple = {
        "sys.version_info": version,
        "sys.version_info.major": version[0],
        "sys.version_info.minor": version[1],
        "sys.platform": target.sys_platform,
        "os.name": target.os_name,
    }
    if name in simple:
        return simple[name]
    if isinstance(node, ast.Call) and dotted(node.func) == "platform.system" and not node.args:
        return target.system
    if isinstance(node, ast.Subscript) and dotted(node.value) == "sys.version_info":
        try:
            index = ast.literal_eval(node.slice) if not isinstance(node.slice, ast.Slice) else None
        except (ValueError, TypeError, SyntaxError):
            return None
        if isinstance(node.slice, ast.Slice):
            return _slice(version, node.slice)
        return version[index] if isinstance(index, int) and -3 <= index < 3 else None
    return None


def _slice(version: tuple[int, int, int], part: ast.Slice) -> object:
    try:
        bounds = [ast.literal_eval(b) if b is not None else None for b in (part.lower, part.upper)]
    except (ValueError, TypeError, SyntaxError):
        return None
    if part.step is not None or not all(b is None or isinstance(b, int) for b in bounds):
        return None
    return version[bounds[0] : bounds[1]]


def _platform_call(call: ast.Call, target: Target) -> bool | None:
    """`sys.platform.startswith("win")` and the like."""
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr not in ("startswith", "endswith"):
        return None
    value = _known_value(func.value, target)
    if not isinstance(value, str) or len(call.args) != 1 or call.keywords:
        return None
    try:
        prefix = ast.literal_eval(call.args[0])
    except (ValueError, TypeError, SyntaxError):
        return None
    if isinstance(prefix, str) or (
        isinstance(prefix, tuple) and all(isinstance(p, str) for p in prefix)
    ):
        return bool(getattr(value, func.attr)(prefix))
    return None


def dotted(node: ast.AST) -> str | None:
    """`a.b.c` for a chain of attributes on a name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


# --- CUDA at import time ----------------------------------------------------------------------

# torch.cuda functions that need no GPU: queries, and calls torch queues until CUDA starts.
_SAFE_CUDA = frozenset(
    {
        "is_available",
        "device_count",
        "is_initialized",
        "is_bf16_supported",
        "get_arch_list",
        "manual_seed",
        "manual_seed_all",
        "seed",
        "seed_all",
        "empty_cache",
        "set_per_process_memory_fraction",
    }
)
_SAFE_CUDA_MODULES = ("amp", "nvtx", "random")


def cuda_calls(tree: ast.Module) -> list[CudaCall]:
    """The CUDA calls a module evaluates when it is imported: at module level, in class
    bodies, in decorators and in default arguments (function bodies and lambdas run later;
    `if __name__ == "__main__":` runs only as a script, `if TYPE_CHECKING:` never)."""
    aliases = _torch_aliases(tree)
    devices = _cuda_names(tree, aliases)
    found: list[CudaCall] = []
    for node, context in _evaluated(tree):
        for call in _calls(node):
            what = _cuda_call(call, aliases, devices)
            if what is not None:
                found.append(CudaCall(call.lineno, what, context))
    return sorted(set(found), key=lambda c: (c.line, c.call))


def _evaluated(tree: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    """(expression or simple statement, context) for what runs at import time."""
    stack: list[tuple[ast.stmt, str]] = [(s, "module level") for s in reversed(tree.body)]
    while stack:
        node, context = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from ((d, "decorator") for d in node.decorator_list)
            arguments = node.args
            defaults = [*arguments.defaults, *(d for d in arguments.kw_defaults if d)]
            yield from ((d, "default argument") for d in defaults)
        elif isinstance(node, ast.ClassDef):
            yield from ((d, "decorator") for d in node.decorator_list)
            yield from ((b, context) for b in (*node.bases, *(k.value for k in node.keywords)))
            stack += [(s, "class body") for s in reversed(node.body)]
        elif isinstance(node, ast.If) and (_is_main(node.test) or _is_type_checking(node.test)):
            stack += [(s, context) for s in reversed(node.orelse)]
        else:
            body = _nested_statements(node)
            yield from ((e, context) for e in _expressions(node))
            stack += [(s, context) for s in reversed(body)]


def _nested_statements(node: ast.stmt) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for name in ("body", "orelse", "finalbody"):
        out += getattr(node, name, None) or []
    for handler in getattr(node, "handlers", None) or []:
        out += handler.body
    for case in getattr(node, "cases", None) or []:
        out += case.body
    return out


def _expressions(node: ast.stmt) -> list[ast.AST]:
    """The expressions a statement evaluates itself (not those of its nested statements)."""
    return [
        child
        for child in ast.iter_child_nodes(node)
        if not isinstance(child, ast.stmt | ast.excepthandler)
        and not (hasattr(ast, "match_case") and isinstance(child, ast.match_case))
    ]


def _calls(node: ast.AST) -> Iterator[ast.Call]:
    """The calls in an expression, not those in lambda bodies (they run later)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Lambda):
            stack += [d for d in (*current.args.defaults, *current.args.kw_defaults) if d]
            continue
        if isinstance(current, ast.Call):
            yield current
        stack += ast.iter_child_nodes(current)


def _is_type_checking(test: ast.expr) -> bool:
    return _last_name(test) == "TYPE_CHECKING"


def _is_main(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and dotted(test.left) == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _torch_aliases(tree: ast.Module) -> dict[str, str]:
    """Module-level names bound to `torch` or `torch.cuda` (`import torch as th`,
    `from torch import cuda`)."""
    aliases = {"torch": "torch"}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ("torch", "torch.cuda") and alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module == "torch" and not node.level:
            for alias in node.names:
                if alias.name == "cuda":
                    aliases[alias.asname or "cuda"] = "torch.cuda"
    return aliases


def _canonical(name: str | None, aliases: dict[str, str]) -> str | None:
    if name is None:
        return None
    head, _, rest = name.partition(".")
    if head not in aliases:
        return None
    return aliases[head] + (f".{rest}" if rest else "")


def _cuda_names(tree: ast.Module, aliases: dict[str, str]) -> frozenset[str]:
    """Module-level names assigned a CUDA device: `DEVICE = "cuda"`, `torch.device("cuda:0")`."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and _is_cuda_device(node.value, aliases, frozenset()):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return frozenset(names)


def _is_cuda_device(node: ast.expr, aliases: dict[str, str], names: frozenset[str]) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value == "cuda" or node.value.startswith("cuda:")
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        return isinstance(first, ast.Constant) and str(first.value).startswith("cuda")
    if isinstance(node, ast.Name):
        return node.id in names
    if isinstance(node, ast.Call) and _canonical(dotted(node.func), aliases) == "torch.device":
        return bool(node.args) and _is_cuda_device(node.args[0], aliases, names)
    return False


def _cuda_call(call: ast.Call, aliases: dict[str, str], devices: frozenset[str]) -> str | None:
    """How a call needs a GPU, as the report says it; None when it does not."""
    name = _canonical(dotted(call.func), aliases)
    if name is not None and name.startswith("torch.cuda."):
        parts = name.split(".")[2:]
        if parts[-1] not in _SAFE_CUDA and parts[0] not in _SAFE_CUDA_MODULES:
            return f"{name}()"
    if isinstance(call.func, ast.Attribute):
        if call.func.attr == "cuda" and name is None:
            return ".cuda()"
        if call.func.attr == "to" and call.args and _is_cuda_device(call.args[0], aliases, devices):
            return f".to({ast.unparse(call.args[0])})"
    for keyword in call.keywords:
        if keyword.arg == "device" and _is_cuda_device(keyword.value, aliases, devices):
            return f"device={ast.unparse(keyword.value)}"
    return None
