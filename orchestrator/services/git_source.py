"""Git sources: clone a repository (GitPython) and check that one is reachable.

Credentials are used for one command only. They reach git through the environment of that
command: a credential helper given as ``GIT_CONFIG_*`` variables reads them from two variables of
its own, so nothing lands in ``.git/config``, on a command line or in a message. Credentials
embedded in a URL (``https://user:pass@host/...``) are taken out of it the same way.

Accepted URLs: ``http``, ``https``, ``ssh`` and ``git`` URLs with a host, and the scp-like
``user@host:path`` form. Local paths and ``file://`` URLs are refused on purpose: a repository URL
comes from API clients, and must not read the node's own disk.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import git

from orchestrator.errors import InvalidInput, OperationFailed

SCHEMES = frozenset({"http", "https", "ssh", "git"})
DEFAULT_BRANCHES = ("main", "master")
CLONE_TIMEOUT = 600.0
VALIDATE_TIMEOUT = 60.0

_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/\\].*)$")
_BRANCH_OK = re.compile(r"^[A-Za-z0-9._/-]+$")
# A credential helper that answers git from two variables of its own environment.
_HELPER = ('!f() { test "$1" = get || exit 0; '
           'test -n "$RN_GIT_USERNAME" && echo "username=$RN_GIT_USERNAME"; '
           'test -n "$RN_GIT_PASSWORD" && echo "password=$RN_GIT_PASSWORD"; }; f')


class GitFailure(OperationFailed):
    """A git command failed; ``kind`` is auth, not_found, unreachable, branch or other."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class GitUrl:
    url: str  # without credentials
    host: str
    username: str | None = None
    password: str | None = None


def parse_url(url: str) -> GitUrl:
    """Check a repository URL and take any credentials out of it (InvalidInput if not a URL)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("Invalid repository URL: repo_url is required")
    url = url.strip()
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidInput("Invalid repository URL: it contains whitespace or control characters")
    if "://" not in url:
        scp = _SCP_LIKE.match(url)
        if scp:
            return GitUrl(url, scp.group("host"))
        raise InvalidInput("Invalid repository URL: expected http(s)://, ssh://, git:// or "
                           "user@host:path")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError as exc:
        raise InvalidInput(f"Invalid repository URL: {_safe_reason(exc)}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidInput(f"Invalid repository URL: scheme '{scheme}' is not supported "
                           "(use http, https, ssh or git)")
    if not host:
        raise InvalidInput("Invalid repository URL: no host")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    netloc = parts.netloc.rpartition("@")[2]
    if scheme == "ssh" and username and password is None:
        # ssh://user@host/path: the user belongs to the URL, not to a credential.
        netloc, username = f"{quote(username)}@{netloc}", None
    clean = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
    return GitUrl(clean, host, username, password)


def clone(url: str, dest: Path | str, *, branch: str | None = None, username: str | None = None,
          password: str | None = None, timeout: float = CLONE_TIMEOUT) -> Path:
    """Clone ``url`` (its ``branch``, else main, then master) into ``dest``; returns ``dest``.

    ``dest`` must not exist or be empty. Raises InvalidInput for a bad URL or branch name and
    GitFailure (an OperationFailed) with a one-line reason otherwise; ``dest`` is then removed.
    """
    target = parse_url(url)
    if branch is not None and branch.strip():
        branch = branch.strip()
        if not _BRANCH_OK.match(branch) or branch.startswith("-") or ".." in branch:
            raise InvalidInput(f"Invalid branch name '{branch}'")
        candidates: tuple[str, ...] = (branch,)
    else:
        candidates = DEFAULT_BRANCHES
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput(f"Clone destination {dest} is not empty")
    env = _environment(username or target.username, password or target.password)
    secrets = _secrets(password, target)
    has_creds = bool(username or password or target.username or target.password)
    last: GitFailure | None = None
    for name in candidates:
        command = ["git", "clone", "--quiet", "--depth", "1", "--single-branch", "--branch", name,
                   "--", target.url, str(dest)]
        try:
            git.Git().execute(command, env=env, kill_after_timeout=timeout)
            return dest
        except git.GitCommandError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            last = _failure(exc, target, secrets, has_creds=has_creds, branch=name)
            if last.kind != "branch":
                raise last from None
    assert last is not None
    if branch is None or not branch.strip():
        raise GitFailure(f"branch not found: the repository has neither 'main' nor 'master' "
                         f"({scrub(target.url, secrets)})", "branch")
    raise last


def validate(url: str, username: str | None = None, password: str | None = None, *,
             timeout: float = VALIDATE_TIMEOUT) -> str | None:
    """None when the repository answers with these credentials, else a one-line reason."""
    try:
        target = parse_url(url)
    except InvalidInput as exc:
        return "not a URL: " + exc.message.removeprefix("Invalid repository URL: ")
    env = _environment(username or target.username, password or target.password)
    try:
        git.Git().execute(["git", "ls-remote", "--heads", target.url], env=env,
                          kill_after_timeout=timeout)
    except git.GitCommandError as exc:
        has_creds = bool(username or password or target.username or target.password)
        return _failure(exc, target, _secrets(password, target), has_creds=has_creds).message
    return None


# -- helpers ---------------------------------------------------------------------------------
def _environment(username: str | None, password: str | None) -> dict[str, str]:
    """The environment of one git command: no prompts, our credential helper only."""
    return {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GCM_INTERACTIVE": "never",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=15 "
                           "-o StrictHostKeyChecking=accept-new",
        "GIT_HTTP_LOW_SPEED_LIMIT": "1",
        "GIT_HTTP_LOW_SPEED_TIME": "60",
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": "",  # drop helpers configured elsewhere
        "GIT_CONFIG_KEY_1": "credential.helper",
        "GIT_CONFIG_VALUE_1": _HELPER,
        "RN_GIT_USERNAME": username or ("git" if password else ""),
        "RN_GIT_PASSWORD": password or "",
    }


def _secrets(password: str | None, target: GitUrl) -> list[str]:
    values = [password, target.password, quote(password or "", safe=""),
              quote(target.password or "", safe="")]
    return [v for v in values if v]


def scrub(text: str, secrets: list[str] | None = None) -> str:
    """``text`` without URL credentials and without any of ``secrets``."""
    text = re.sub(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@", r"\g<scheme>", text)
    for secret in sorted(secrets or [], key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _safe_reason(exc: Exception) -> str:
    return "malformed URL" if "port" not in str(exc).lower() else "invalid port"


def _failure(exc: git.GitCommandError, target: GitUrl, secrets: list[str], *,
             has_creds: bool, branch: str | None = None) -> GitFailure:
    """Classify a failed git command into one clear line without secrets."""
    raw = exc.stderr
    stderr = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
    stderr = stderr.strip().removeprefix("stderr: '").removesuffix("'")
    low = stderr.lower()
    where = scrub(target.url, secrets)
    if branch and ("remote branch" in low and "not found" in low):
        return GitFailure(f"branch not found: '{branch}' does not exist in {where}", "branch")
    if ("authentication failed" in low or "could not read username" in low
            or "could not read password" in low or "access denied" in low
            or "permission denied (publickey" in low or "http 401" in low
            or "returned error: 401" in low or "returned error: 403" in low):
        reason = "invalid credentials" if has_creds else "the repository needs credentials"
        return GitFailure(f"authentication failed: {reason}", "auth")
    if ("not found" in low and "repository" in low) or "does not appear to be a git" in low \
            or "returned error: 404" in low:
        return GitFailure(f"repository not found: {where}", "not_found")
    if any(s in low for s in ("could not resolve host", "failed to connect", "couldn't connect",
                              "connection refused", "connection timed out", "timed out",
                              "no route to host", "network is unreachable",
                              "could not resolve hostname", "connection reset")):
        return GitFailure(f"host unreachable: {target.host}", "unreachable")
    if low.startswith("timeout:"):
        return GitFailure(f"host unreachable: {target.host} did not answer in time",
                          "unreachable")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    detail = lines[-1].removeprefix("fatal: ") if lines else f"exit code {exc.status}"
    return GitFailure(f"git failed: {scrub(detail, secrets)}", "other")
