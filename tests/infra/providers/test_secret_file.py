"""LocalSecretFile's provider, called directly: files appear 0600, and a lost or edited file is a change."""

from __future__ import annotations

import os
import stat

import dill
import pytest

from infra.providers.secret_file import LocalSecretFileProvider, file_sha256, sha256_text, write_secret_file

CONTENT = "context: talos-dr\ncontexts: {}\n"


@pytest.fixture
def provider():
    return LocalSecretFileProvider()


@pytest.fixture
def created(tmp_path, provider):
    props = {"path": str(tmp_path / ".talos" / "talosconfig"), "content": CONTENT}
    result = provider.create(props)
    return props, result


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_writes_content_0600_and_outputs_only_a_hash(created):
    props, result = created
    assert result.id == props["path"]
    assert open(props["path"]).read() == CONTENT
    assert mode(props["path"]) == 0o600
    assert mode(os.path.dirname(props["path"])) == 0o700
    assert result.outs == {"path": props["path"], "sha256": sha256_text(CONTENT)}
    assert CONTENT not in repr(result.outs)
    assert not os.path.exists(props["path"] + ".part")


def test_created_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        write_secret_file(str(tmp_path / "kubeconfig"), CONTENT)
    finally:
        os.umask(old)
    assert mode(tmp_path / "kubeconfig") == 0o600


def test_a_stale_part_file_is_not_reused(tmp_path):
    target = tmp_path / "kubeconfig"
    part = tmp_path / "kubeconfig.part"
    part.write_text("stale")
    os.chmod(part, 0o644)
    write_secret_file(str(target), CONTENT)
    assert target.read_text() == CONTENT and mode(target) == 0o600
    assert part.read_text() == "stale"  # unique temporary names: a stale or planted .part is never touched


def test_no_change_when_file_matches(created, provider):
    props, result = created
    diff = provider.diff(result.id, props, dict(props))
    assert diff.changes is False
    assert not diff.replaces


def test_diff_after_deletion_then_update_restores(created, provider):
    props, result = created
    os.unlink(props["path"])
    diff = provider.diff(result.id, props, dict(props))
    assert diff.changes is True and not diff.replaces, "a missing file is rewritten in place"
    provider.update(result.id, props, dict(props))
    assert open(props["path"]).read() == CONTENT and mode(props["path"]) == 0o600


def test_diff_after_whole_folder_lost(created, provider):
    props, result = created
    os.unlink(props["path"])
    os.rmdir(os.path.dirname(props["path"]))
    assert provider.diff(result.id, props, dict(props)).changes is True
    provider.update(result.id, props, dict(props))
    assert open(props["path"]).read() == CONTENT


def test_diff_after_local_edit(created, provider):
    props, result = created
    with open(props["path"], "a") as f:
        f.write("# edited\n")
    assert provider.diff(result.id, props, dict(props)).changes is True


def test_diff_after_content_change(created, provider):
    props, result = created
    news = {**props, "content": CONTENT + "new: cert\n"}
    diff = provider.diff(result.id, props, news)
    assert diff.changes is True and not diff.replaces
    out = provider.update(result.id, props, news).outs
    assert open(props["path"]).read() == news["content"]
    assert out["sha256"] == sha256_text(news["content"]) == file_sha256(props["path"])


def test_path_change_replaces(created, provider, tmp_path):
    props, result = created
    news = {**props, "path": str(tmp_path / "elsewhere")}
    diff = provider.diff(result.id, props, news)
    assert diff.changes is True and diff.replaces == ["path"]


def test_delete_removes_and_tolerates_missing(created, provider):
    props, result = created
    provider.delete(result.id, {**result.outs, **props})
    assert not os.path.exists(props["path"])
    provider.delete(result.id, {**result.outs, **props})  # already gone: no error


def test_read_reports_disk_state(created, provider):
    props, result = created
    assert provider.read(result.id, result.outs).outs["sha256"] == sha256_text(CONTENT)
    os.unlink(props["path"])
    assert provider.read(result.id, result.outs).outs["sha256"] is None


def test_check_rejects_bad_inputs(provider):
    assert provider.check({}, {"path": "/x", "content": "y"}).failures == []
    failures = provider.check({}, {"path": "", "content": 3}).failures
    assert {f.property for f in failures} == {"path", "content"}


def test_provider_pickles_with_dill_by_reference(tmp_path):
    """pulumi.dynamic stores the provider with dill; the provider process must get a working copy back."""
    blob = dill.dumps(LocalSecretFileProvider(), recurse=True)
    assert b"infra.providers.secret_file" in blob, "pickled by reference to an importable module"
    clone = dill.loads(blob)
    props = {"path": str(tmp_path / "f"), "content": CONTENT}
    clone.create(props)
    assert clone.diff("x", props, props).changes is False


def test_pulumi_serializes_the_provider():
    from pulumi.dynamic.dynamic import serialize_provider

    assert serialize_provider(LocalSecretFileProvider())
