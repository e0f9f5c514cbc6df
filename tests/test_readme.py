"""The README, followed as a newcomer would: its commands run and print what it says.

* "Monitor your own keys" is followed literally against the Binance simulator: its YAML block
  is written where its first line says, its shell lines and ``$`` commands run in ``bash`` in
  README order, the secrets are typed in where it reads them, and every command's output is
  compared with the output printed under it. Only the simulator's URL
  (``KEYMON_EXCHANGES__BINANCE__BASE_URL``, a loopback ``http`` URL, which keymon accepts) and
  the daemon's port (the tests hold 9877, see ``tests/conftest.py``) differ from a real run.
* Every command of the README's fenced ``sh``/``console`` blocks is run by a test here, or is
  in :data:`RUN_ELSEWHERE` with the test that runs it: a command added to the README without
  a test fails :func:`test_every_readme_command_is_run_by_a_test`.
* Every relative link of the Markdown pages resolves to a file of the repository, and every
  ``#anchor`` to a heading of its page.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from keymon.config import DEFAULT_CONFIG_PATH
from keymon.simulator.binance import BinanceSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET, wait_until

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
QUICK_START = "Monitor your own keys"
#: The section's port, which the test replaces by a free one (the tests hold 9877).
DOCUMENTED_PORT = "9877"


# ============================================================================ reading Markdown


@dataclass
class Block:
    """One fenced code block: its info string, its lines, and the prose just before it."""

    lang: str
    lines: list[str]
    before: str


def fenced_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    prose: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})(\S*)\s*$", lines[i])
        if not opening:
            prose.append(lines[i])
            i += 1
            continue
        fence, lang = opening.groups()
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        i += 1
        blocks.append(Block(lang, body, "\n".join(prose[-12:])))
        prose = []
    return blocks


def section(text: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def shell_lines(lines: list[str]) -> list[str]:
    """The commands of an ``sh`` block: continuation lines joined, comments dropped."""
    commands: list[str] = []
    pending = ""
    for line in lines:
        if pending:
            line = pending + " " + line.strip()
            pending = ""
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1].rstrip()
            continue
        command = re.sub(r"\s+#\s.*$", "", line).strip()
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


@dataclass
class Console:
    """A ``$ command`` of a ``console`` block and the output printed under it."""

    command: str
    output: list[str] = field(default_factory=list)


def console_commands(lines: list[str]) -> list[Console]:
    session: list[Console] = []
    for line in lines:
        if line.startswith("$ "):
            session.append(Console(line[2:].strip()))
        else:
            assert session, f"console block starts with output, not a command: {line!r}"
            session[-1].output.append(line)
    return session


def readme_commands(text: str) -> list[str]:
    """Every command a reader of ``text`` is told to type: ``sh`` lines and ``$`` lines."""
    commands: list[str] = []
    for block in fenced_blocks(text):
        if block.lang in ("sh", "bash", "shell"):
            commands += shell_lines(block.lines)
        elif block.lang == "console":
            commands += [c.command for c in console_commands(block.lines)]
    return commands


# ============================================================================ running commands


def keymon_venv(workdir: Path) -> None:
    """``workdir/.venv``: the checkout's (``scripts/test`` builds it), else one for this Python."""
    venv = ROOT / ".venv"
    if (venv / "bin" / "keymon").exists():
        (workdir / ".venv").symlink_to(venv)
        return
    bin_dir = workdir / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "keymon"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m keymon "$@"\n')
    script.chmod(0o755)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def normalise(text: str) -> str:
    """Output with what moves between runs (times, ports, temporary names) made constant."""
    text = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?Z?)?", "<time>", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", text)
    text = re.sub(r"\S*/keymon-demo-\w+/", "<tmp>/keymon-demo-<dir>/", text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


@dataclass
class QuickStart:
    """What the section does, in order, and what it says each command prints."""

    config_path: str
    config: str
    secret_lines: list[str]
    run_command: str
    checks: list[Console]  # before the daemon
    refused_output: list[str]  # the plain block: `check` from an IP the key does not allow
    daemon_checks: list[Console]  # while the daemon runs


def read_quick_start() -> QuickStart:
    """Walk the section's blocks; anything the walk does not know fails the test."""
    config_path = config = run_command = ""
    secret_lines: list[str] = []
    checks: list[Console] = []
    daemon_checks: list[Console] = []
    refused: list[str] = []
    for block in fenced_blocks(section(README.read_text(), QUICK_START)):
        if block.lang == "yaml":
            first = block.lines[0]
            assert first.startswith("# "), "the config block's first line names its file"
            config_path, config = first[2:].strip(), "\n".join(block.lines) + "\n"
        elif block.lang == "sh":
            for command in shell_lines(block.lines):
                if command.startswith("read "):
                    secret_lines.append(command)
                elif command == ".venv/bin/keymon run":
                    run_command = command
                else:
                    raise AssertionError(
                        f"'{QUICK_START}' has a command this test does not run: {command}"
                    )
        elif block.lang == "console":
            (daemon_checks if run_command else checks).extend(console_commands(block.lines))
        elif block.lang == "":
            assert "refused IP" in block.before, "a plain block here is check's refused-IP output"
            refused = block.lines
        else:
            raise AssertionError(f"unexpected ```{block.lang} block in '{QUICK_START}'")
    assert config_path, "no config block"
    assert secret_lines, "no secrets read"
    assert run_command, "no keymon run"
    assert checks, "no command before the daemon"
    assert daemon_checks, "no command while the daemon runs"
    assert refused, "no refused-IP output"
    return QuickStart(
        config_path, config, secret_lines, run_command, checks, refused, daemon_checks
    )


class Shell:
    """``bash`` in a scratch checkout, with the secrets typed in as the README reads them."""

    def __init__(self, workdir: Path, quick: QuickStart, base_url: str, port: int) -> None:
        self.workdir = workdir
        self.preamble = "\n".join(quick.secret_lines)
        self.stdin = f"{DOC_API_KEY}\n{DOC_SECRET}\n"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYMON_", "ACME_"))}
        self.env |= {
            "KEYMON_EXCHANGES__BINANCE__BASE_URL": base_url,
            "KEYMON_LISTEN": f"127.0.0.1:{port}",
            "NO_COLOR": "1",
        }
        self.port = port

    def script(self, command: str) -> str:
        command = command.replace(f"127.0.0.1:{DOCUMENTED_PORT}", f"127.0.0.1:{self.port}")
        return f"{self.preamble}\n{command}\n"

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", self.script(command)],
            input=self.stdin,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            env=self.env,
            timeout=60,
            check=False,
        )

    def start(self, command: str) -> subprocess.Popen[str]:
        typed, keyboard = os.pipe()  # what the user types at the prompts, then end of input
        os.write(keyboard, self.stdin.encode())
        os.close(keyboard)
        try:
            return subprocess.Popen(
                ["bash", "-c", self.script(f"exec {command}")],
                stdin=typed,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=self.workdir,
                env=self.env,
            )
        finally:
            os.close(typed)


# ============================================================================ the quick start


@pytest.fixture
def quick_start_sim() -> Iterator[tuple[BinanceSimulator, str]]:
    """The Binance simulator with the key the README creates: the client guide's settings."""
    sim = BinanceSimulator()
    sim.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    with sim.serve_in_thread() as url:
        yield sim, url


def test_monitor_your_own_keys_as_written(
    quick_start_sim: tuple[BinanceSimulator, str], tmp_path: Path
) -> None:
    """The section, command by command: config, secrets, validate, check, run, /readyz, /metrics."""
    sim, url = quick_start_sim
    quick = read_quick_start()
    # The README relies on the default path: no command in the section passes --config.
    assert Path(quick.config_path) == DEFAULT_CONFIG_PATH
    keymon_venv(tmp_path)
    target = tmp_path / quick.config_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(quick.config)
    shell = Shell(tmp_path, quick, url, free_port())
    outputs: list[str] = []

    for step in quick.checks:
        proc = shell.run(step.command)
        outputs += [proc.stdout, proc.stderr]
        assert proc.returncode == 0, f"{step.command}: {proc.stderr}"
        assert normalise(proc.stdout) == normalise("\n".join(step.output)), step.command

    # From an IP the key does not allow: the same check, as the plain block shows it.
    check = next(s.command for s in quick.checks if s.command.endswith("keymon check"))
    sim.set_ip_whitelist(DOC_API_KEY, ["203.0.113.10"])
    proc = shell.run(check)
    outputs += [proc.stdout, proc.stderr]
    assert proc.returncode == 2, proc.stderr
    assert normalise(proc.stdout) == normalise("\n".join(quick.refused_output))
    sim.set_ip_whitelist(DOC_API_KEY, None)

    daemon = shell.start(quick.run_command)
    try:
        base = f"http://127.0.0.1:{shell.port}"

        def ready() -> bool:
            assert daemon.poll() is None, daemon.communicate(timeout=5)
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30)
        for step in quick.daemon_checks:
            proc = shell.run(step.command)
            outputs += [proc.stdout, proc.stderr]
            assert normalise(proc.stdout) == normalise("\n".join(step.output)), step.command
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=15)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate(timeout=10)
    outputs += [out, err]
    assert daemon.returncode == 0, err
    for event in ("keymon_started", "audit_completed"):  # what the README says it logs
        assert f'"event": "{event}"' in err, err
    assert (tmp_path / "data" / "keymon.sqlite3").exists()  # ./data, as the README says
    assert not any(DOC_SECRET in text for text in outputs)
    assert "Traceback" not in "".join(outputs)


# ============================================================================ the two commands


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "demo"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_scripts_demo_once_prints_the_readme_table() -> None:
    """``scripts/demo --once`` prints the README's table (the dates move with the clock)."""
    text = README.read_text()
    assert "`scripts/demo --once`" in text
    table = next(b for b in fenced_blocks(text) if b.lines and b.lines[0].startswith("KEY "))
    proc = run_demo("--once")
    assert proc.returncode == 0, proc.stderr
    assert normalise(proc.stdout) == normalise("\n".join(table.lines))


def newcomer_env() -> dict[str, str]:
    """The environment of a newcomer's shell: the checkout's ``.venv/bin`` is not on ``PATH``
    (``scripts/test`` puts it there for the tools), so the demo names the script by its path,
    as the README shows."""
    venv_bin = (ROOT / ".venv" / "bin").resolve()
    path = [
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and Path(entry).resolve() != venv_bin
    ]
    return {**os.environ, "PATH": os.pathsep.join(path)}


def test_scripts_demo_prints_where_to_look_and_stops_on_ctrl_c() -> None:
    """``scripts/demo`` (here ``--listen`` a free port, as the README offers: the tests hold 9877)
    prints the README's banner, serves the metrics it names and stops on Ctrl-C."""
    text = README.read_text()
    assert "`scripts/demo --listen 127.0.0.1:9900`" in text
    banner = next(b for b in fenced_blocks(text) if b.lines and "Look at:" in b.lines[0])
    port = free_port()
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "demo"), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=newcomer_env(),
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=240)  # the first run of scripts/demo builds .venv
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'rule="withdraw_enabled",severity="critical",permission=""} 1.0' in metrics
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert normalise(out) == normalise("\n".join(banner.lines))


def test_ci_runs_exactly_scripts_test() -> None:
    """``scripts/test`` is what CI runs (.ci/run), so CI is its test."""
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert commands == ["exec scripts/test"]


# ============================================================================ every command tested

#: README commands this module runs, by the test that runs them.
RUN_HERE = {
    "scripts/demo": test_scripts_demo_prints_where_to_look_and_stops_on_ctrl_c,
}
#: README commands run elsewhere, with the test (or job) that runs them and why not here.
RUN_ELSEWHERE = {
    "scripts/test": "CI: .ci/run executes exactly it (test_ci_runs_exactly_scripts_test); "
    "running the whole suite from inside the suite would recurse",
}


def test_every_readme_command_is_run_by_a_test() -> None:
    """A command added to the README without a test that runs it fails here."""
    text = README.read_text()
    quick = set(readme_commands(section(text, QUICK_START)))
    # test_monitor_your_own_keys_as_written runs every command of its section, or fails.
    read_quick_start()
    untested = [
        c for c in readme_commands(text) if c not in quick | RUN_HERE.keys() | RUN_ELSEWHERE.keys()
    ]
    assert not untested, f"README commands no test runs: {untested}"
    stale = [c for c in RUN_HERE.keys() | RUN_ELSEWHERE.keys() if c not in readme_commands(text)]
    assert not stale, f"no longer in the README: {stale}"


def test_command_extraction() -> None:
    """The extraction sees sh lines (comments and continuations) and console ``$`` lines only."""
    text = (
        "```sh\nscripts/demo   # a comment\n# only a comment\nfoo \\\n  --bar\n```\n"
        "```console\n$ keymon check\nKEY ...\n```\n"
        "```\n$ not a command: output\n```\n"
    )
    assert readme_commands(text) == ["scripts/demo", "foo --bar", "keymon check"]


# ============================================================================ links

LINKED_PAGES = [
    README,
    ROOT / "CONTRIBUTING.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "deploy").rglob("*.md")),
]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a page's headings (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"^#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(path: Path) -> list[str]:
    """The targets of a page's Markdown links, outside code."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link names a file of the repository; every #anchor a heading there."""
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        missing = not dest.exists() or not dest.is_relative_to(ROOT)
        if missing or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_link_checker_catches_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A `b` c\n\n[x](missing.md) [y](#a-b-c) [z](#nope)\n")
    assert links(page) == ["missing.md", "#a-b-c", "#nope"]
    assert anchors(page) == {"title", "a-b-c"}


def test_no_page_names_a_document_the_repository_does_not_hold() -> None:
    """The contract and research notes the README used to cite are not in the repository."""
    for page in LINKED_PAGES:
        text = page.read_text()
        for name in ("exchange-apis.md", "PRODUCT.md"):
            assert name not in text, f"{page.relative_to(ROOT)} names {name}"


def test_readme_is_short_and_has_a_reference_table() -> None:
    """The README is read top-down; the long reference lives in docs/, linked from it."""
    text = README.read_text()
    assert len(text.splitlines()) <= 350
    heads = re.findall(r"^## (.+)$", text, re.M)
    assert heads[:2] == ["Two commands", QUICK_START]
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in text, f"README does not link docs/{page.name}"
