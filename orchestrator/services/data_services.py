"""DATA services: an uploaded file kept encrypted at rest, with the passphrase to open it.

The plaintext is encrypted as it is read from the upload's chunks, so it never sits whole on disk
in clear; the file ends up at ``services_dir/<id>/data.enc`` (or ``data-<random>.enc`` when it is
attached to a service that exists already, as the web UI's uploads do). The passphrase is stored
only in the service's data details (returned by ``GET /api/services/{id}/passphrase``, nowhere
else).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.models import DataDetails
from orchestrator.registry import ServiceRegistry, ServiceView, validate_name
from orchestrator.services.data_crypto import ENCRYPTION_METHOD, encrypt_stream, generate_passphrase
from orchestrator.states import InterfaceType, ServiceStatus, ServiceType
from orchestrator.wiring import Interface

DATA_FILE_NAME = "data.enc"
DATA_INTERFACES = (Interface(InterfaceType.STDOUT, description="The data file's contents"),)


class HashMismatch(InvalidInput):
    pass


class DataServices:
    def __init__(self, settings: Settings, registry: ServiceRegistry) -> None:
        self.settings = settings
        self.registry = registry
        registry.before_delete(self._remove_file)

    @property
    def root(self) -> Path:
        return self.settings.services_dir

    def create_from_stream(self, *, name: str, description: str, file_name: str,
                           pieces: Iterable[bytes], expected_size: int,
                           expected_sha256: str) -> ServiceView:
        """Encrypt the uploaded bytes and record them as a new ACTIVE DATA service.

        Raises HashMismatch (and leaves nothing behind) when the bytes are not the declared file.
        """
        validate_name(name)
        tmp, size, sha, passphrase = self._encrypt(pieces, expected_size, expected_sha256)
        try:
            details = DataDetails(original_name=file_name, file_size=size, file_hash=sha,
                                  encryption_method=ENCRYPTION_METHOD, passphrase=passphrase)
            view = self.registry.create(name=name, service_type=ServiceType.DATA,
                                        description=description, status=ServiceStatus.ACTIVE,
                                        interfaces=DATA_INTERFACES, details=details)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        service_id = view.service.id
        assert service_id is not None
        final_dir = self.root / str(service_id)
        try:
            shutil.rmtree(final_dir, ignore_errors=True)  # a leftover of a crash
            final_dir.mkdir(mode=0o700)
            final = final_dir / DATA_FILE_NAME
            os.replace(tmp, final)
            return self.registry.update_details(service_id, file_path=str(final))
        except BaseException:
            tmp.unlink(missing_ok=True)
            shutil.rmtree(final_dir, ignore_errors=True)
            with contextlib.suppress(NotFound):
                self.registry.delete(service_id)
            raise

    def check_attach_target(self, service_id: int) -> ServiceView:
        """The existing DATA service that ``attach_file`` would give a file to."""
        view = self.registry.get(service_id)
        if view.service.service_type != ServiceType.DATA:
            raise InvalidInput("Service is not a DATA service")
        return view

    def attach_file(self, service_id: int, *, file_name: str, pieces: Iterable[bytes],
                    expected_size: int | None = None,
                    expected_sha256: str | None = None) -> ServiceView:
        """Encrypt the bytes and make them the file of an existing DATA service.

        A file it had is replaced (with a new passphrase); its status is left as it is. A service
        without interfaces gets the DATA ones. On any failure the service is unchanged.
        """
        view = self.check_attach_target(service_id)
        tmp, size, sha, passphrase = self._encrypt(pieces, expected_size, expected_sha256)
        directory = self.root / str(service_id)
        final = directory / f"data-{uuid.uuid4().hex[:16]}.enc"
        fields = {"file_path": str(final), "original_name": file_name, "file_size": size,
                  "file_hash": sha, "encryption_method": ENCRYPTION_METHOD,
                  "passphrase": passphrase}
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            os.replace(tmp, final)
            if view.data is None:
                self.registry.add_details(service_id, DataDetails(**fields))
            else:
                self.registry.update_details(service_id, **fields)
        except BaseException:
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise
        old = Path(view.data.file_path) if view.data is not None and view.data.file_path else None
        if old is not None and old != final and old.parent == directory:
            old.unlink(missing_ok=True)
        if not view.interfaces:
            self.registry.replace_interfaces(service_id, DATA_INTERFACES)
        return self.registry.get(service_id)

    def _encrypt(self, pieces: Iterable[bytes], expected_size: int | None,
                 expected_sha256: str | None) -> tuple[Path, int, str, str]:
        """Encrypt into a staging file -> (its path, plaintext size, sha256, passphrase).

        With an ``expected_sha256``, raises HashMismatch (the file removed) when the bytes
        differ from it or from ``expected_size``.
        """
        staging = self.root / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging / f"{uuid.uuid4().hex}.enc"
        passphrase = generate_passphrase()
        try:
            with open(tmp, "wb") as out:
                size, sha = encrypt_stream(pieces, out, passphrase)
                out.flush()
                os.fsync(out.fileno())
            if expected_sha256 is not None and (sha != expected_sha256
                                                or size != expected_size):
                raise HashMismatch(f"Upload rejected: sha256 mismatch (declared {expected_sha256}, "
                                   f"received {sha})")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, size, sha, passphrase

    def _remove_file(self, view: ServiceView) -> None:
        """Registry delete hook: the encrypted file goes with its service."""
        if view.data is None or not view.data.file_path:
            return
        directory = Path(view.data.file_path).parent
        if directory.parent.resolve() == self.root.resolve():
            shutil.rmtree(directory, ignore_errors=True)
