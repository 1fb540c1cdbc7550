"""``sigma space deploy``: upload a built Space folder to the Hugging Face hub (the Space is created when missing).

Every failure is one line that says what to do: no token (``hf auth login`` or HF_TOKEN), offline mode, no network,
a refused token, or the hub's own refusal.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sigma_studio.model.errors import InputError, SigmaError
from sigma_studio.model.hub import offline

from .space_files import HARDWARE

LOGIN = "run `hf auth login` (or set HF_TOKEN to a token with write access)"
REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
BUILT_FILES = ("README.md", "app.py", "requirements.txt")
# what a local run of the folder leaves there, and what the Space must not get
IGNORE = ["*__pycache__*", "*.pyc", "outputs/*", ".*"]


class DeployError(SigmaError):
    """The Space could not be created or uploaded: no token, no network, or the hub refused."""


@dataclass(frozen=True)
class Deployed:
    repo: str
    url: str
    hardware: str  # the card's suggested_hardware (asked for when the Space was created)


def check_built(folder: Path) -> str:
    """The ``suggested_hardware`` of a folder written by ``sigma space build`` (refused otherwise, in one line)."""
    missing = [name for name in BUILT_FILES if not (folder / name).is_file()]
    if not folder.is_dir() or missing or not list(folder.glob("sigma_studio-*.dist-info")):
        what = "is not a folder" if not folder.is_dir() else f"lacks {', '.join(missing) or 'the package'}"
        raise InputError(f"{folder} {what}: build the Space first with `sigma space build {folder}`")
    try:
        front = (folder / "README.md").read_text(encoding="utf-8").split("---")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(f"{folder}/README.md is unreadable ({reason}): build the Space again") from None
    found = re.search(r"^suggested_hardware:\s*\"?([\w-]+)", front[1] if len(front) > 2 else "", re.MULTILINE)
    known = {hw.suggested for hw in HARDWARE.values()}
    if found is None or found.group(1) not in known:
        raise InputError(f"{folder}/README.md has no Space card of `sigma space build` (suggested_hardware one of "
                         f"{', '.join(sorted(known))}): build it again")  # fmt: skip
    return found.group(1)


def deploy_space(folder: Path, repo: str, *, token: str | None = None, private: bool = False,
                 message: str | None = None) -> Deployed:  # fmt: skip
    """Create the Space ``repo`` (Gradio SDK, the card's hardware) when missing, then make its files the folder's:
    one commit that uploads the folder and deletes what the folder no longer has (``.gitattributes`` stays)."""
    from huggingface_hub import HfApi, get_token

    if not REPO_RE.match(repo):
        raise InputError(f"REPO {repo!r} is not a Space name such as your-name/sigma-studio (owner/name)")
    hardware = check_built(folder)
    if offline():
        raise DeployError("HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it, with the network up, to deploy")
    with hub_errors(repo):
        token = token or get_token()  # (HF_TOKEN, then the login's file; a CI's OIDC exchange can fail here)
    if not token:
        raise DeployError(f"No Hugging Face token to upload with: {LOGIN}, then deploy again")
    api = HfApi(token=token)
    with hub_errors(repo):
        url = api.create_repo(repo, repo_type="space", space_sdk="gradio", space_hardware=hardware, private=private,
                              exist_ok=True)  # fmt: skip
        api.upload_folder(
            repo_id=repo, folder_path=folder, repo_type="space", ignore_patterns=IGNORE, delete_patterns=["*"],
            commit_message=message or f"SIGMA Studio Space ({hardware}), from sigma space build",
        )  # fmt: skip
    return Deployed(repo, str(url), hardware)


@contextlib.contextmanager
def hub_errors(repo: str) -> Iterator[None]:
    """Turn the hub client's exceptions (and the network's) into one DeployError line."""
    try:
        yield
    except SigmaError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the hub client raises becomes one line
        raise DeployError(describe(exc, repo)) from None


def describe(exc: Exception, repo: str) -> str:
    """The one line for an exception of the hub client while creating or uploading ``repo``."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it, with the network up, to deploy"
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            return f"The hub refused the token (401): {LOGIN} again"
        if status == 403:
            return f"The token may not write to {repo} (403): use a token with write access to that owner ({LOGIN})"
        return f"The hub refused {repo} ({status}): {first}"
    if _is_network(exc):
        return f"Cannot reach the Hugging Face hub ({first}): check the network (or HF_ENDPOINT), then deploy again"
    return f"Uploading to {repo} failed: {type(exc).__name__}: {first}"


def _is_network(exc: Exception) -> bool:
    """A connection that failed or timed out, whichever HTTP client the hub library uses (httpx, requests)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, ConnectionError | TimeoutError) or bool(
        names & {"TransportError", "NetworkError", "TimeoutException", "ConnectError", "ConnectionError"}
    )
