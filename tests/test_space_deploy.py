"""``sigma space deploy`` with the hub out of reach: offline mode, no token, no network, a refused token, each one
line saying what to do; and, with a stand-in for the hub client, the calls a deploy makes."""

from __future__ import annotations

import importlib
import socket

import pytest
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError
from typer.testing import CliRunner

from sigma_studio.cli.main import app
from sigma_studio.cli.space_files import app_source, card, requirements

REPO = "someone/sigma-studio"


def run(*args: str):
    """(exit code, non-empty output lines) of ``sigma ARGS``."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


def refused(args, *words: str) -> str:
    code, lines = run(*args)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert all(word in lines[0] for word in words), lines
    return lines[0]


@pytest.fixture
def folder(tmp_path):
    """A folder as `sigma space build` writes it (its text files; the package's .dist-info stands for the package)."""
    out = tmp_path / "space"
    (out / "sigma_studio-0.1.0.dist-info").mkdir(parents=True)
    (out / "README.md").write_text(card("cpu", "0.1.0", "6.0.0"))
    (out / "app.py").write_text(app_source("cpu", "0.1.0"))
    (out / "requirements.txt").write_text(requirements(["torch>=2.5"], "cpu", "0.1.0", "6.0.0"))
    return out


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """No token anywhere (no HF_TOKEN, no stored login), not offline: a test sets what it needs."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"), raising=False)
    return monkeypatch


def test_offline_mode_is_one_line(folder, hub):
    hub.setenv("HF_HUB_OFFLINE", "1")
    hub.setenv("HF_TOKEN", "hf_test")
    refused(["space", "deploy", folder, REPO], "HF_HUB_OFFLINE", "unset it")


def test_no_token_names_the_login(folder, hub):
    refused(["space", "deploy", folder, REPO], "No Hugging Face token", "hf auth login", "HF_TOKEN")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # (closed again on return: a connection to it is refused)


def test_no_network_is_one_line(folder, hub):
    """The real hub client against an endpoint that refuses connections: its own exception, one line."""
    hub.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    line = refused(["space", "deploy", folder, REPO, "--token", "hf_test"], "Cannot reach the Hugging Face hub")
    assert "check the network" in line


def http_error(status: int) -> HfHubHTTPError:
    """The hub client's own error for an HTTP status (built on its HTTP library's response: httpx or a fork)."""
    http = importlib.import_module(HfHubHTTPError.__mro__[1].__module__.split(".")[0])
    request = http.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} Client Error for url ...", response=http.Response(status, request=request))


class FakeHub:
    """Stands in for HfApi: records its calls; ``fail`` raises on create_repo."""

    calls: list = []
    fail: Exception | None = None

    def __init__(self, token=None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/spaces/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


@pytest.fixture
def fake(hub):
    FakeHub.calls, FakeHub.fail = [], None
    hub.setattr("huggingface_hub.HfApi", FakeHub)
    hub.setenv("HF_TOKEN", "hf_test")
    return FakeHub


@pytest.mark.parametrize(("status", "words"), [(401, ("refused the token (401)", "hf auth login")),
                                               (403, ("may not write to someone/sigma-studio (403)",)),
                                               (402, ("refused someone/sigma-studio (402)",))])  # fmt: skip
def test_the_hubs_refusals_are_one_line(folder, fake, status, words):
    fake.fail = http_error(status)
    refused(["space", "deploy", folder, REPO], *words)


def test_deploy_creates_the_space_and_uploads_the_folder(folder, fake):
    code, lines = run("space", "deploy", folder, REPO, "--private")
    assert code == 0, lines
    assert f"https://huggingface.co/spaces/{REPO}" in lines[-1] and "cpu-basic" in lines[-1]
    (_, init), (_, create), (_, upload) = fake.calls
    assert init["token"] == "hf_test"
    assert create == {"repo_id": REPO, "repo_type": "space", "space_sdk": "gradio", "space_hardware": "cpu-basic",
                      "private": True, "exist_ok": True}  # fmt: skip
    assert upload["repo_id"] == REPO and upload["folder_path"] == folder and upload["repo_type"] == "space"
    assert upload["delete_patterns"] == ["*"] and "outputs/*" in upload["ignore_patterns"]


def test_a_folder_that_was_not_built_is_refused(tmp_path, fake):
    (tmp_path / "app.py").write_text("")
    refused(["space", "deploy", tmp_path, REPO], "sigma space build", "lacks README.md, requirements.txt")
    assert not [call for call in fake.calls if call[0] != "init"]


def test_a_bad_space_name_is_refused(folder, fake):
    refused(["space", "deploy", folder, "not a repo"], "owner/name")
    assert fake.calls == []
