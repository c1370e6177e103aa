"""fastio/_core.pyi against the runtime (DESIGN.md rule 8).

Every public name of fastio._core is in the stub and every public name of
the stub exists at runtime; for every function and every public method of
the C types, inspect.signature works (the docstring starts with a text
signature) and gives the same parameter names, kinds and default-or-not as
the stub. The stub is read with ast, never imported.
"""
import ast
import inspect
import os

import pytest

import fastio
from fastio import _core

STUB = os.path.join(os.path.dirname(fastio.__file__), "_core.pyi")
P = inspect.Parameter


def public(name):
    return not name.startswith("_")


def load_stub():
    with open(STUB) as f:
        tree = ast.parse(f.read(), STUB)
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names[t.id] = node
    return names


STUB_NAMES = load_stub()


def stub_params(fn: ast.FunctionDef, drop_first: bool):
    """[(name, kind, has_default)] of a stub def, as inspect would give them."""
    a = fn.args
    out = []
    positional = [(x, P.POSITIONAL_ONLY) for x in a.posonlyargs] + \
                 [(x, P.POSITIONAL_OR_KEYWORD) for x in a.args]
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    for (arg, kind), default in zip(positional, defaults):
        name = arg.arg
        # Old-style positional-only: a name starting with two underscores.
        if name.startswith("__") and not name.endswith("__"):
            kind, name = P.POSITIONAL_ONLY, name[2:]
        out.append((name, kind, default is not None))
    if a.vararg:
        out.append((a.vararg.arg, P.VAR_POSITIONAL, False))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, P.KEYWORD_ONLY, default is not None))
    if a.kwarg:
        out.append((a.kwarg.arg, P.VAR_KEYWORD, False))
    if drop_first:
        out = out[1:]
    return out


def runtime_params(obj, drop_first: bool):
    try:
        sig = inspect.signature(obj)
    except (ValueError, TypeError) as e:
        pytest.fail(f"inspect.signature({obj!r}) fails: {e}; the docstring's first "
                    "line must be a text signature (DESIGN.md rule 8)")
    out = [(p.name, p.kind, p.default is not P.empty) for p in sig.parameters.values()]
    # An unbound method's text signature includes $self; a type's does not.
    if drop_first and out and out[0][0] in ("self", "cls", "type", "module"):
        out = out[1:]
    return out


def methods_of(cls):
    """Public callables the C type defines itself (not inherited)."""
    return {n: v for n, v in vars(cls).items()
            if public(n) and (inspect.ismethoddescriptor(v) or inspect.isbuiltin(v)
                              or isinstance(v, (classmethod, staticmethod)))}


def data_of(cls):
    """Public data descriptors (getset, members) the C type defines."""
    return {n for n, v in vars(cls).items()
            if public(n) and inspect.isdatadescriptor(v)}


def stub_members(node: ast.ClassDef):
    funcs, data = {}, set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            decos = {d.id for d in item.decorator_list if isinstance(d, ast.Name)}
            if decos & {"property"}:
                data.add(item.name)
            else:
                funcs[item.name] = item
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            data.add(item.target.id)
    return funcs, data


RUNTIME = sorted(n for n in dir(_core) if public(n))
# The C types: every class of the module but built-ins re-exported (error =
# OSError) and exceptions (made by PyErr_NewException, no methods of their own).
TYPES = sorted(n for n in RUNTIME if isinstance(getattr(_core, n), type)
               and getattr(_core, n).__module__ != "builtins"
               and not issubclass(getattr(_core, n), BaseException))
FUNCS = sorted(n for n in RUNTIME if inspect.isbuiltin(getattr(_core, n)))


def test_stub_parses_and_has_content():
    assert "mmap" in STUB_NAMES and "PAGESIZE" in STUB_NAMES


def test_every_runtime_name_is_in_the_stub():
    missing = [n for n in RUNTIME if n not in STUB_NAMES]
    assert missing == [], f"in fastio._core but not in _core.pyi: {missing}"


def test_every_stub_name_exists_at_runtime():
    extra = [n for n in STUB_NAMES if public(n) and not hasattr(_core, n)]
    assert extra == [], f"in _core.pyi but not in fastio._core: {extra}"


def test_kinds_agree():
    for n in RUNTIME:
        obj, node = getattr(_core, n), STUB_NAMES.get(n)
        if node is None:
            continue  # reported by test_every_runtime_name_is_in_the_stub
        if isinstance(obj, type):
            ok = isinstance(node, ast.ClassDef) or (  # error = OSError
                isinstance(node, ast.Assign) and isinstance(node.value, ast.Name)
                and node.value.id == obj.__name__)
        elif callable(obj):
            ok = isinstance(node, ast.FunctionDef)
        else:
            ok = isinstance(node, (ast.AnnAssign, ast.Assign))
        assert ok, f"{n}: runtime {type(obj).__name__}, stub {type(node).__name__}"


@pytest.mark.parametrize("name", FUNCS or [pytest.param(None, marks=pytest.mark.skip(
    "not merged yet: fastio._core has no functions"))])
def test_function_signature_matches_stub(name):
    obj = getattr(_core, name)
    node = STUB_NAMES.get(name)
    assert isinstance(node, ast.FunctionDef), f"{name} is not a def in _core.pyi"
    assert runtime_params(obj, drop_first=False) == stub_params(node, drop_first=False), name


@pytest.mark.parametrize("tname", TYPES)
def test_type_members_match_stub(tname):
    cls = getattr(_core, tname)
    node = STUB_NAMES[tname]
    assert isinstance(node, ast.ClassDef)
    sfuncs, sdata = stub_members(node)
    rmeth, rdata = methods_of(cls), data_of(cls)
    assert sorted(set(rmeth) - set(sfuncs)) == [], f"{tname} methods missing from the stub"
    assert sorted({n for n in sfuncs if public(n)} - set(rmeth)) == [], \
        f"{tname} stub methods missing at runtime"
    assert sorted(rdata - sdata) == [], f"{tname} attributes missing from the stub"
    assert sorted({n for n in sdata if public(n)} - rdata - set(dir(cls))) == [], \
        f"{tname} stub attributes missing at runtime"


@pytest.mark.parametrize("qual", [f"{t}.{m}" for t in TYPES
                                  for m in sorted(methods_of(getattr(_core, t)))])
def test_method_signature_matches_stub(qual):
    tname, mname = qual.split(".")
    cls = getattr(_core, tname)
    sfuncs, _ = stub_members(STUB_NAMES[tname])
    assert mname in sfuncs, f"{qual} is not in _core.pyi"
    stub = stub_params(sfuncs[mname], drop_first=True)
    assert runtime_params(getattr(cls, mname), drop_first=True) == stub, qual


@pytest.mark.parametrize("tname", TYPES)
def test_constructor_signature_matches_stub(tname):
    cls = getattr(_core, tname)
    sfuncs, _ = stub_members(STUB_NAMES[tname])
    ctor = sfuncs.get("__new__") or sfuncs.get("__init__")
    stub = stub_params(ctor, drop_first=True) if ctor else []
    assert runtime_params(cls, drop_first=False) == stub, tname


@pytest.mark.parametrize("qual", [f"{t}.{m}" for t in TYPES
                                  for m in sorted(methods_of(getattr(_core, t)))] + FUNCS)
def test_docstring_starts_with_text_signature(qual):
    obj = _core
    for part in qual.split("."):
        obj = getattr(obj, part)
    assert obj.__text_signature__, f"{qual}: no text signature in its docstring"
    assert obj.__doc__ and obj.__doc__.strip(), f"{qual}: no description after the signature"
