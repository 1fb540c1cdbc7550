"""Terminal output: the Rich console, progress bars, result panels and the one place errors are rendered."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

from sigma_studio.model import SigmaError

console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


class _LineHandler(logging.Handler):
    """Log records as the CLI's own lines: ``warning: ...`` / ``error: ...``, info dimmed (one style for all). With
    ``once``, a warning is shown once a command: a loop of requests (``sigma batch``, an evaluation) that all draw the
    same one would otherwise print it a hundred times. A server (``sigma webui``) shows every one."""

    STYLES = {logging.WARNING: "[yellow]warning:[/] ", logging.ERROR: "[bold red]error:[/] "}

    def __init__(self, once: bool) -> None:
        super().__init__()
        self.once, self.warned = once, set()

    def emit(self, record: logging.LogRecord) -> None:
        level = max(k for k in (0, logging.WARNING, logging.ERROR) if record.levelno >= k)
        if level == logging.WARNING and self.once:
            if record.getMessage() in self.warned:
                return
            self.warned.add(record.getMessage())
        prefix = self.STYLES.get(level, "[dim]")
        suffix = "" if level else "[/]"
        console.print(f"{prefix}{escape(record.getMessage())}{suffix}", soft_wrap=True)


def setup_logging(verbose: bool, once: bool = True) -> None:
    """A fresh handler for the command about to run (``once``: each warning shown once while it runs)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[_LineHandler(once)], force=True)


@contextlib.contextmanager
def errors(debug: bool) -> Iterator[None]:
    """Turn a SigmaError into one red line and its exit code (tracebacks only with --debug)."""
    try:
        yield
    except SigmaError as exc:
        if debug:
            console.print_exception()
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def progress(transient: bool = True, disable: bool = False) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=disable,
    )


def print_json(data: dict) -> None:
    sys.stdout.write(json.dumps(data, indent=1) + "\n")
    sys.stdout.flush()


def unwrapped(doc: str) -> str:
    """A command's docstring as help text: the lines of each paragraph joined, so that the terminal wraps them at
    its own width (they are wrapped at 115 columns in the source, and Typer keeps every line break). Indented lines
    (the examples) and list items keep their own lines."""
    paragraphs = []
    for paragraph in doc.strip().split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if not lines or line.startswith((" ", "- ", "* ")) or lines[-1].startswith(" "):
                lines.append(line)
            else:
                lines[-1] = f"{lines[-1]} {line.strip()}"
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def unwrap_help(app: typer.Typer) -> None:
    """Give every command of ``app`` (and of its sub-apps) its docstring :func:`unwrapped` as help."""
    import inspect

    for info in app.registered_commands:
        doc = info.help or (inspect.getdoc(info.callback) if info.callback else None)
        if doc:
            info.help = unwrapped(doc)
    for group in app.registered_groups:
        unwrap_help(group.typer_instance)
