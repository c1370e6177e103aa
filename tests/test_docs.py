"""Every Python code block in README.md and docs/*.md runs, so the docs cannot rot.

How blocks are found and run (the rules a doc writer needs):

- A block fenced with ```python is run; any other fence (```sh, ```pycon
  for an interactive session with its output, a bare ``` for a signature
  or an output sample) is not.
- The blocks of one file run in order, in one namespace (a later block may
  use the names an earlier one defined), with one fresh temporary
  directory, made for that file, as the current directory: a block that
  needs a file creates it there first (or a block before it does).
- A python block that cannot run here (it needs a network host, a device,
  root) carries, on the line right before its fence, the marker

      <!-- docs-test: skip REASON -->

  and is reported as skipped with that reason. The marker is an HTML
  comment, so readers of the rendered page do not see it.
- One test per block, named after the file and the line of its fence; a
  traceback names the doc's own lines (``docs/aio.md``, line 40). Running
  one block alone (``-k 'aio.md:150'``) runs the blocks before it first.
- A block that plots is skipped under the ASan preload (matplotlib aborts
  there), and one that needs matplotlib or pandas where it is missing.
- Each block gets at most BLOCK_TIMEOUT seconds (SIGALRM; fastio's calls
  retry EINTR after checking for signals, so a blocked call ends too).
"""
import os
import re
import signal

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK_TIMEOUT = 120
FENCE = re.compile(r"^```(?P<lang>[^\s`]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b\s*(?P<reason>.*?)\s*-->\s*\Z")


def doc_files():
    if not os.path.exists(os.path.join(ROOT, "README.md")):
        return []       # not a source checkout: no docs beside the tests
    docs = os.path.join(ROOT, "docs")
    return ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(docs)
                                  if f.endswith(".md"))


def blocks_of(relpath):
    """[(line of the fence, code, skip reason or None)] of the python blocks."""
    with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
        return parse(f.read())


def parse(text):
    out = []
    for m in FENCE.finditer(text):
        if m.group("lang") != "python":
            continue
        line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        out.append((line, m.group("code"), skip.group("reason") or "no reason given"
                    if skip else None))
    return out


def _missing_here(code):
    """Why a block cannot run in this test run (None: it can): plotting under
    the ASan preload (matplotlib's C++ extensions abort there, as
    test_lab_notebook.py says), or an optional module not installed."""
    import importlib.util
    plots = re.search(r"\.plot\(|matplotlib", code)
    if plots and ("libasan" in os.environ.get("LD_PRELOAD", "")
                  or os.environ.get("FASTIO_SANITIZE") == "1"):
        return "plots with matplotlib, whose C++ extensions abort under the ASan preload"
    for mod, used in (("matplotlib", plots), ("pandas", re.search(r"to_pandas\(", code))):
        if used and importlib.util.find_spec(mod) is None:
            return f"needs {mod} (the lab extra), not installed"
    return None


ALL = [(f, line, code, skip or _missing_here(code))
       for f in doc_files() for line, code, skip in blocks_of(f)]


class _FileState:
    """One doc file's namespace, directory and progress through its blocks."""

    def __init__(self, directory):
        self.directory = directory
        self.namespace = {"__name__": "__docs__"}
        self.done = {}      # line -> None (ran) or the error text


_STATES = {}


class BlockTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise BlockTimeout(f"a docs block ran longer than {BLOCK_TIMEOUT} s")


def _run(relpath, line, code, state, monkeypatch):
    monkeypatch.chdir(state.directory)
    # Blank lines in front so that tracebacks give the line in the doc.
    compiled = compile("\n" * line + code, os.path.join(ROOT, relpath), "exec")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(BLOCK_TIMEOUT)
    try:
        exec(compiled, state.namespace)
    except BaseException as e:
        state.done[line] = f"{type(e).__name__}: {e}"
        raise
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    state.done[line] = None


def test_the_docs_have_python_blocks():
    if not doc_files():
        pytest.skip("README.md is not beside tests/ (not a source checkout)")
    assert len(ALL) > 20
    assert any(f == "README.md" for f, *_ in ALL)


SAMPLE = """intro
```python
a = 1
```
<!-- docs-test: skip needs a network host -->
```python
import socket; socket.create_connection(("example.org", 80))
```
```sh
pip install .
```
```pycon
>>> a
1
```
```
fastio.mmap(fileno, length)
```
"""


def test_parser_runs_python_fences_and_honours_the_marker():
    assert parse(SAMPLE) == [
        (2, "a = 1\n", None),
        (6, 'import socket; socket.create_connection(("example.org", 80))\n',
         "needs a network host")]


@pytest.fixture
def lab_registry():
    """A block may register a lab method (docs/lab.md shows how): the registry
    is global, so it is put back as it was (same dict, same order) and the
    other tests see only the lab's own methods."""
    from fastio.lab import methods
    saved = dict(methods.METHODS)
    yield
    methods.METHODS.clear()
    methods.METHODS.update(saved)


@pytest.mark.parametrize("relpath,line,code,skip", ALL,
                         ids=[f"{f}:{line}" for f, line, _, _ in ALL])
def test_block(relpath, line, code, skip, tmp_path_factory, monkeypatch, lab_registry):
    if skip is not None:
        pytest.skip(f"{relpath}:{line}: {skip}")
    state = _STATES.get(relpath)
    if state is None:
        name = re.sub(r"\W", "_", relpath)
        state = _STATES[relpath] = _FileState(str(tmp_path_factory.mktemp(name)))
    # The blocks before this one first (in order), when they have not run yet.
    for f, ln, c, sk in ALL:
        if f != relpath or ln >= line or sk is not None:
            continue
        if ln not in state.done:
            try:
                _run(f, ln, c, state, monkeypatch)
            except BaseException:
                pass
        if state.done[ln] is not None:
            pytest.fail(f"the block at {f}:{ln}, which this one follows, failed: "
                        f"{state.done[ln]}")
    _run(relpath, line, code, state, monkeypatch)


# ------------------------------------------------------------ links, wording

IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("relpath", doc_files())
def test_images_the_docs_show_exist(relpath):
    with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
        text = f.read()
    for target in IMAGE.findall(text):
        if "://" in target:
            continue
        path = os.path.normpath(os.path.join(ROOT, os.path.dirname(relpath), target))
        assert os.path.isfile(path), f"{relpath} shows {target}, which does not exist"
        assert os.path.getsize(path) < 200_000, f"{target}: keep committed figures small"


# "seed" was the project's first design document; users never saw it. The
# lab's groups are the I/O families. The word stays legitimate for the
# random seed of the rand pattern (``seed=0``, "random seed").
SEED = re.compile(r"\bseed(?!\s*=)(?!`)", re.I)


def seed_words(text):
    return [text[max(m.start() - 40, 0):m.end() + 40].replace("\n", " ")
            for m in SEED.finditer(text)
            if not re.search(r"random\s+$", text[max(m.start() - 10, 0):m.start()], re.I)]


def test_no_seed_wording_in_the_docs_and_the_notebook():
    files = doc_files() + [os.path.join("docs", "compare_io_methods.ipynb")]
    if not doc_files():
        pytest.skip("README.md is not beside tests/ (not a source checkout)")
    found = {}
    for relpath in files:
        with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
            words = seed_words(f.read())
        if words:
            found[relpath] = words
    assert found == {}


def lab_user_text():
    """The lab's docstrings and every --help text of the CLI."""
    import inspect
    import subprocess
    import sys
    import tempfile
    import fastio.lab
    from fastio.lab import cli, methods, plots, results, runner
    texts = {}
    for mod in (fastio.lab, cli, methods, plots, results, runner):
        texts[mod.__name__] = mod.__doc__ or ""
        for name, obj in vars(mod).items():
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and \
                    getattr(obj, "__module__", None) == mod.__name__:
                texts[f"{mod.__name__}.{name}"] = inspect.getdoc(obj) or ""
                for mname, m in vars(obj).items() if inspect.isclass(obj) else ():
                    if inspect.isfunction(m) or isinstance(m, property):
                        texts[f"{mod.__name__}.{name}.{mname}"] = inspect.getdoc(m) or ""
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        fastio.lab.__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [pkg_root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    for cmd in ([], ["run"], ["sweep"], ["list"]):
        p = subprocess.run([sys.executable, "-m", "fastio", *cmd, "--help"], env=env,
                           cwd=tempfile.gettempdir(), capture_output=True, text=True,
                           timeout=60)
        texts[" ".join(["fastio", *cmd, "--help"])] = p.stdout
    return texts


def test_no_seed_wording_in_the_cli_help_and_the_lab_docstrings():
    found = {k: seed_words(v) for k, v in lab_user_text().items()}
    assert {k: v for k, v in found.items() if v} == {}


# ------------------------------------------------------------ CLI commands

# `python -m fastio ARGS` or `fastio ARGS`: a code span holding only the
# command, or a line of a fenced block (up to a comment or a pipe).
SPAN = re.compile(r"`(?:python3? -m fastio|fastio)((?: +[^\s`]+)*)`")
LINE = re.compile(r"^(?:.*&& *)?(?:python3? -m fastio|fastio)(?=\s|$)((?: +[^\s#&|;)]+)*)")


def cli_commands():
    out = {}
    for relpath in doc_files():
        with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
            text = f.read()
        fenced = set()
        for m in FENCE.finditer(text):
            first = text.count("\n", 0, m.start("code")) + 1
            for i, ln in enumerate(m.group("code").splitlines()):
                fenced.add(first + i)
                c = LINE.match(ln) if m.group("lang") != "python" else None
                if c:
                    out.setdefault((relpath, tuple(c.group(1).split())), first + i)
        for n, ln in enumerate(text.splitlines(), 1):
            if n not in fenced:
                for c in SPAN.finditer(ln):
                    out.setdefault((relpath, tuple(c.group(1).split())), n)
    return [(f, n, list(a)) for (f, a), n in out.items()]


@pytest.mark.parametrize("relpath,line,argv", cli_commands(),
                         ids=[f"{f}:{n}:{' '.join(a)}" for f, n, a in cli_commands()])
def test_cli_commands_in_the_docs_parse(relpath, line, argv, capsys):
    """Every lab command the docs show is accepted by the CLI's parser (method
    and group names, options): parsed only, not run."""
    from fastio.lab import cli
    command = argv[0] if argv and argv[0] in cli.COMMANDS else None
    try:
        cli.build_parser(command).parse_args(argv[1:] if command else argv)
    except SystemExit as e:
        if e.code != 0:     # --help exits 0
            pytest.fail(f"{relpath}:{line}: fastio {' '.join(argv)}: "
                        f"{capsys.readouterr().err.strip().splitlines()[-1]}")
