"""Source resolution: which repositories and files are fetched, the SIGMA repo fallback, the offline errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub.errors import RepositoryNotFoundError

from sigma_studio.model import CheckpointError, load_pipeline
from sigma_studio.model.hub import BACKBONE_REPO, SIGMA_REPOS, HubOptions, WeightsUnavailableError, resolve
from sigma_studio.model.weights.loader import save_pipeline


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_pipe):
    return save_pipeline(tiny_pipe, tmp_path_factory.mktemp("hub") / "tiny")


class FakeHub:
    """Stands in for snapshot_download: repos are folders; records every call's patterns."""

    def __init__(self, root: Path, repos: dict[str, Path]):
        self.root, self.repos, self.calls = root, repos, []

    def __call__(self, repo, allow_patterns=None, **kwargs):
        self.calls.append((repo, tuple(allow_patterns or ()), kwargs.get("local_files_only")))
        if repo not in self.repos:
            err = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
            Exception.__init__(err, f"{repo} not found")
            raise err
        import fnmatch

        out = self.root / repo.replace("/", "--") / str(len(self.calls))
        out.mkdir(parents=True)
        for f in self.repos[repo].iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                shutil.copy(f, out / f.name)
        return str(out)


@pytest.fixture
def fake_hub(tmp_path, tiny_dir, monkeypatch):
    backbone = tiny_dir
    sigma = tmp_path / "sigma_repo"
    sigma.mkdir()
    shutil.copy(tiny_dir / "ema.safetensors", sigma)
    (sigma / "README.md").write_text("SIGMA")
    hub = FakeHub(tmp_path / "cache", {BACKBONE_REPO: backbone, SIGMA_REPOS[1]: sigma})
    monkeypatch.setattr("huggingface_hub.snapshot_download", hub)
    return hub


def test_sigma_fetches_only_configs_from_the_backbone(fake_hub):
    src = resolve("sigma")
    backbone_call = next(c for c in fake_hub.calls if c[0] == BACKBONE_REPO)
    assert "ema.safetensors" not in backbone_call[1] and "ae.safetensors" in backbone_call[1]
    assert not (src.config_dir / "ema.safetensors").exists()
    assert (src.config_dir / "ae.safetensors").exists() and src.weights.name == "ema.safetensors"
    # the first SIGMA name does not exist in this fake hub: the second one is used
    assert [c[0] for c in fake_hub.calls if c[0] != BACKBONE_REPO] == list(SIGMA_REPOS)


def test_sigma_loads_end_to_end_through_the_fake_hub(fake_hub):
    pipe = load_pipeline("sigma", mode="cpu")
    assert pipe.name == "sigma" and pipe.mode == "cpu"
    assert pipe("a cat", steps=2, seed=1).image.size == (128, 128)


def test_bagel_alias_fetches_the_full_backbone(fake_hub):
    src = resolve("bagel")
    assert (src.config_dir / "ema.safetensors").exists() and src.weights is None


def test_unknown_source():
    with pytest.raises(CheckpointError, match="not a Hugging Face repo id"):
        resolve("not-a-dir-or-repo")


def test_offline_without_cache_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        resolve("sigma", HubOptions(cache_dir=str(tmp_path)))
    msg = str(err.value)
    assert "\n" not in msg and "sigma download sigma" in msg and str(tmp_path) in msg


def test_offline_with_a_populated_cache(tmp_path, tiny_dir, monkeypatch):
    """A real huggingface_hub cache layout resolves with no network at all."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = tmp_path / f"models--{BACKBONE_REPO.replace('/', '--')}" / "snapshots" / "abc123"
    shutil.copytree(tiny_dir, snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc123")
    src = resolve("bagel", HubOptions(cache_dir=str(tmp_path)))
    assert src.config_dir == snap
    assert load_pipeline("bagel", cache_dir=str(tmp_path), mode="cpu").arch.llm.hidden_size == 64


def test_a_missing_repo_is_one_clear_error(fake_hub):
    with pytest.raises(CheckpointError, match="someone/missing does not exist on the Hugging Face hub"):
        resolve("someone/missing")
