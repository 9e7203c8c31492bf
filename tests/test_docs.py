"""Run the code of the documentation pages, so that the docs cannot rot.

Every fenced block whose info string is exactly ``python`` in ``docs/*.md`` is executed; the
blocks of one page run in order, in one namespace, in a fresh temporary working directory.
Tracebacks point at the page and its line numbers.

Two markers, written as an HTML comment on the line just before a fence (invisible on the
site), change that:

``<!-- docs-test: no-run REASON -->``
    The block is only compiled (syntax checked), not run. A reason is required; use it for
    code that cannot run in the test suite at all (for example a fit on the full data set).
``<!-- docs-test: output -->``
    Before a ```` ```text ```` block that directly follows a python block: what that python
    block prints must equal the text (line by line, trailing spaces ignored). Use it only for
    output that does not depend on the machine (no timings, no last-digit floats of BLAS).
``<!-- docs-test: needs-shared-data -->`` (anywhere on a page)
    The page's blocks see ``SHARED_DATA``, the :class:`pathlib.Path` of ``../shared/data``; the
    page is skipped, with the fixture's reason, where the data sets are absent. Pages without
    the marker do not get the name, so a block that uses the data without declaring it fails.

Fences that look like Python but would not be run (```` ```py ````, ```` ```{code-block}
python ````, ```` ```pycon ````, ...) are rejected, so that no example is left out silently.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))

_FENCE_OPEN = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
# Info strings that name Python without being the one form the runner executes.
_PYTHON_LIKE = re.compile(
    r"^(\{(code-block|code|sourcecode|code-cell|literalinclude|testcode|doctest)\}\s*)?"
    r"(py|py3|python3?|ipython3?|pycon|python-console)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    line: int  # 1-based line number of the first line of code
    info: str
    code: str
    no_run_reason: str | None = None
    is_expected_output: bool = False


def parse_blocks(text: str) -> list[Block]:
    """All fenced code blocks of a MyST page, with the ``docs-test`` marker before each.

    A fence closes at the first line holding only the same character, at least as many times
    (CommonMark's rule); fences inside an open code block are code, not fences.
    """
    lines = text.splitlines()
    blocks = []
    directives = []  # open MyST directive fences, whose bodies are markdown
    i = 0
    while i < len(lines):
        if directives and _closes(lines[i], directives[-1]):
            directives.pop()
            i += 1
            continue
        opened = _FENCE_OPEN.match(lines[i])
        if opened is None:
            i += 1
            continue
        fence, info = opened["fence"], opened["info"]
        if info.startswith("{") and not _PYTHON_LIKE.match(info):
            # A directive (note, math, toctree...): keep scanning its body for code blocks.
            directives.append(fence)
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not _closes(lines[end], fence):
            end += 1
        marker = _MARKER.match(lines[i - 1]) if i > 0 else None
        reason = None
        is_output = False
        if marker is not None:
            body = marker["body"]
            if body == "output":
                if info != "text":
                    raise ValueError(f"line {i}: 'docs-test: output' must precede a text block")
                is_output = True
            elif body.startswith("no-run"):
                reason = body[len("no-run") :].strip()
                if not reason:
                    raise ValueError(f"line {i}: 'docs-test: no-run' needs a reason")
            elif body != "needs-shared-data":
                raise ValueError(f"line {i}: unknown docs-test marker {body!r}")
        indent = len(opened["indent"])
        code = "\n".join(line[indent:] for line in lines[i + 1 : end])
        blocks.append(Block(i + 2, info, code, no_run_reason=reason, is_expected_output=is_output))
        i = end + 1
    return blocks


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a fence opened with ``fence`` (same character, as long or longer)."""
    stripped = line.strip()
    return len(stripped) >= len(fence) and stripped == fence[0] * len(stripped)


def needs_shared_data(text: str) -> bool:
    return any(
        (m := _MARKER.match(line)) is not None and m["body"] == "needs-shared-data"
        for line in text.splitlines()
    )


def _compile(block: Block, page: Path):
    # Leading newlines make the traceback's line numbers those of the page.
    return compile("\n" * (block.line - 1) + block.code, str(page), "exec")


def test_pages_exist():
    assert PAGES, f"no documentation pages found in {DOCS}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_runs(page, request, tmp_path, monkeypatch):
    text = page.read_text(encoding="utf-8")
    blocks = parse_blocks(text)
    for block in blocks:
        assert block.info == "python" or not _PYTHON_LIKE.match(block.info), (
            f"{page.name}:{block.line}: code fence {block.info!r} would not be run; "
            "write ```python (see tests/test_docs.py)"
        )
    namespace = {"__name__": f"docs_{page.stem}"}
    if needs_shared_data(text):
        namespace["SHARED_DATA"] = request.getfixturevalue("shared_data")
    monkeypatch.chdir(tmp_path)
    run_blocks(blocks, namespace, page)


def run_blocks(blocks: list[Block], namespace: dict, page: Path) -> None:
    """Run a page's python blocks in order in ``namespace``, checking the outputs shown."""
    for position, block in enumerate(blocks):
        if block.is_expected_output:
            previous = blocks[position - 1] if position > 0 else None
            assert previous is not None and previous.info == "python", (
                f"{page.name}:{block.line}: an output block must follow a python block"
            )
            assert previous.no_run_reason is None, (
                f"{page.name}:{block.line}: output of a block that is not run"
            )
        if block.info != "python":
            continue
        code = _compile(block, page)
        if block.no_run_reason is not None:
            continue
        following = blocks[position + 1] if position + 1 < len(blocks) else None
        if following is not None and following.is_expected_output:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(code, namespace)
            assert _lines(printed.getvalue()) == _lines(following.code), (
                f"{page.name}:{following.line}: the output shown differs from the output of "
                f"the block above it:\n{printed.getvalue()}"
            )
        else:
            exec(code, namespace)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


# ---------------------------------------------------------------- the runner's own checks
_SAMPLE = """\
# Title

```python
x = 1
```

````{note}
Inside a directive:
```python
x += 1
```
````

<!-- docs-test: no-run needs a cluster -->
```python
raise RuntimeError("never run")
```

```bash
echo not python
```

```text
```python
is text here
```
"""


def test_parser_finds_blocks_markers_and_lines():
    blocks = parse_blocks(_SAMPLE)
    assert [(b.info, b.line) for b in blocks] == [
        ("python", 4),
        ("python", 10),
        ("python", 16),
        ("bash", 20),
        ("text", 24),
    ]
    assert [b.no_run_reason for b in blocks] == [None, None, "needs a cluster", None, None]
    assert blocks[1].code == "x += 1"
    assert blocks[4].code == "```python\nis text here"


def test_output_marker_is_attached_to_text_blocks():
    text = "```python\nprint(1)\n```\n<!-- docs-test: output -->\n```text\n1\n```\n"
    code, output = parse_blocks(text)
    assert not code.is_expected_output and output.is_expected_output
    with pytest.raises(ValueError, match="must precede a text block"):
        parse_blocks("<!-- docs-test: output -->\n```python\npass\n```\n")


def test_wrong_output_fails(tmp_path):
    page = tmp_path / "page.md"
    right = "```python\nprint(6 * 7)\n```\n<!-- docs-test: output -->\n```text\n42\n```\n"
    run_blocks(parse_blocks(right), {}, page)
    with pytest.raises(AssertionError, match="output shown differs"):
        run_blocks(parse_blocks(right.replace("42", "41")), {}, page)


def test_parser_rejects_bad_markers():
    with pytest.raises(ValueError, match="needs a reason"):
        parse_blocks("<!-- docs-test: no-run -->\n```python\npass\n```\n")
    with pytest.raises(ValueError, match="unknown docs-test marker"):
        parse_blocks("<!-- docs-test: skip -->\n```python\npass\n```\n")


@pytest.mark.parametrize("info", ["py", "python3", "{code-block} python", "pycon", "ipython"])
def test_python_like_fences_are_recognised(info):
    assert _PYTHON_LIKE.match(info)


@pytest.mark.parametrize("info", ["python", "bash", "text", "{note}", "{math}", "pythonic"])
def test_other_fences_are_not_python_like(info):
    assert info == "python" or not _PYTHON_LIKE.match(info)


def test_traceback_points_at_the_page_line(tmp_path):
    page = tmp_path / "page.md"
    (block,) = parse_blocks("text\n\n```python\nok = 1\n1 / 0\n```\n")
    with pytest.raises(ZeroDivisionError) as info:
        exec(_compile(block, page), {})
    assert info.traceback[-1].lineno + 1 == 5  # pytest's lineno is 0-based
