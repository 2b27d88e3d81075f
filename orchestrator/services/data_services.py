"""DATA services: an uploaded file kept encrypted at rest, with the passphrase to open it.

The plaintext is encrypted as it is read from the upload's chunks, so it never sits whole on disk
in clear; the file ends up at ``services_dir/<id>/data.enc``. The passphrase is stored only in the
service's data details (returned by ``GET /api/services/{id}/passphrase``, nowhere else).
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
        staging = self.root / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging / f"{uuid.uuid4().hex}.enc"
        passphrase = generate_passphrase()
        try:
            with open(tmp, "wb") as out:
                size, sha = encrypt_stream(pieces, out, passphrase)
                out.flush()
                os.fsync(out.fileno())
            if sha != expected_sha256 or size != expected_size:
                raise HashMismatch(f"Upload rejected: sha256 mismatch (declared {expected_sha256}, "
                                   f"received {sha})")
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

    def _remove_file(self, view: ServiceView) -> None:
        """Registry delete hook: the encrypted file goes with its service."""
        if view.data is None or not view.data.file_path:
            return
        directory = Path(view.data.file_path).parent
        if directory.parent.resolve() == self.root.resolve():
            shutil.rmtree(directory, ignore_errors=True)
