"""Cloning and validating against real git servers on 127.0.0.1 (public, and password-protected)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InvalidInput
from orchestrator.services.git_source import GitFailure, clone, parse_url, scrub, validate
from tests.support.git_server import (
    GIT_PASSWORD,
    GIT_USER,
    GitServer,
    auth_git_server_fixture,  # noqa: F401
    closed_port_url,
    git_server_fixture,  # noqa: F401
)


def test_clone_default_branch_main(git_server: GitServer, tmp_path: Path) -> None:
    url = git_server.create_repo("main-repo", {"README": "on main\n", "src/a.txt": "A"})
    dest = clone(url, tmp_path / "c")
    assert (dest / "README").read_text() == "on main\n"
    assert (dest / "src" / "a.txt").read_text() == "A"


def test_clone_falls_back_to_master(git_server: GitServer, tmp_path: Path) -> None:
    url = git_server.create_repo("master-repo", {"f": "on master"}, branch="master")
    assert (clone(url, tmp_path / "c") / "f").read_text() == "on master"


def test_clone_named_branch(git_server: GitServer, tmp_path: Path) -> None:
    url = git_server.create_repo("branchy", {"f": "main"}, extra_branches={"dev": {"f": "dev"}})
    assert (clone(url, tmp_path / "c", branch="dev") / "f").read_text() == "dev"


def test_missing_branch_is_clear_and_leaves_nothing(git_server: GitServer,
                                                    tmp_path: Path) -> None:
    url = git_server.create_repo("trunk-only", {"f": "x"}, branch="trunk")
    with pytest.raises(GitFailure, match="neither 'main' nor 'master'"):
        clone(url, tmp_path / "c")
    assert not (tmp_path / "c").exists()
    with pytest.raises(GitFailure, match="'nope' does not exist"):
        clone(url, tmp_path / "d", branch="nope")
    assert not (tmp_path / "d").exists()


def test_private_clone_with_credentials_never_persists_them(auth_git_server: GitServer,
                                                            tmp_path: Path) -> None:
    url = auth_git_server.create_repo("private", {"secret.txt": "data"})
    dest = clone(url, tmp_path / "c", username=GIT_USER, password=GIT_PASSWORD)
    assert (dest / "secret.txt").read_text() == "data"
    for path in (dest / ".git").rglob("*"):
        if path.is_file():
            assert GIT_PASSWORD.encode() not in path.read_bytes(), path


def test_credentials_in_url_are_used_and_stripped(auth_git_server: GitServer,
                                                  tmp_path: Path) -> None:
    url = auth_git_server.create_repo("in-url", {"f": "ok"})
    with_creds = url.replace("http://", f"http://{GIT_USER}:{GIT_PASSWORD}@")
    dest = clone(with_creds, tmp_path / "c")
    config = (dest / ".git" / "config").read_text()
    assert GIT_PASSWORD not in config and url in config


def test_wrong_password_is_auth_failure_without_secret(auth_git_server: GitServer,
                                                      tmp_path: Path) -> None:
    url = auth_git_server.create_repo("private2", {"f": "x"})
    with pytest.raises(GitFailure) as info:
        clone(url, tmp_path / "c", username=GIT_USER, password="wrong-pass-123")
    assert info.value.kind == "auth"
    assert "authentication failed" in info.value.message
    assert "wrong-pass-123" not in info.value.message
    assert not (tmp_path / "c").exists()


def test_validate_distinguishes_failures(git_server: GitServer,
                                         auth_git_server: GitServer) -> None:
    public = git_server.create_repo("v-public", {"f": "x"})
    private = auth_git_server.create_repo("v-private", {"f": "x"})
    assert validate(public) is None
    assert validate(private, GIT_USER, GIT_PASSWORD) is None
    wrong = validate(private, GIT_USER, "not-the-password")
    missing_creds = validate(private)
    not_found = validate(git_server.url("does-not-exist"))
    unreachable = validate(closed_port_url())
    assert wrong == "authentication failed: invalid credentials"
    assert missing_creds is not None and missing_creds.startswith("authentication failed")
    assert not_found is not None and not_found.startswith("repository not found")
    assert unreachable is not None and unreachable.startswith("host unreachable")
    assert len({wrong, not_found, unreachable}) == 3
    assert "not-the-password" not in wrong


@pytest.mark.parametrize("url", ["", "not a url", "/srv/repo.git", "file:///srv/repo.git",
                                 "ftp://example.org/r.git", "http://", "https:///path"])
def test_not_a_url(url: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        clone(url, tmp_path / "c")
    message = validate(url)
    assert message is not None and message.startswith("not a URL")
    assert not (tmp_path / "c").exists()


def test_parse_url_forms() -> None:
    assert parse_url("git@example.org:team/repo.git").host == "example.org"
    parsed = parse_url("https://bob:p%40ss@example.org/r.git")
    assert (parsed.url, parsed.username, parsed.password) == (
        "https://example.org/r.git", "bob", "p@ss")
    assert parse_url("ssh://git@example.org/r.git").url == "ssh://git@example.org/r.git"


def test_scrub_removes_url_credentials_and_secrets() -> None:
    text = "fatal: unable to access 'https://bob:hunter2@example.org/r.git/': hunter2"
    cleaned = scrub(text, ["hunter2"])
    assert "hunter2" not in cleaned and "https://example.org/r.git/" in cleaned


def test_bad_branch_name_rejected(git_server: GitServer, tmp_path: Path) -> None:
    url = git_server.create_repo("bn", {"f": "x"})
    with pytest.raises(InvalidInput):
        clone(url, tmp_path / "c", branch="--upload-pack=touch /tmp/x")
