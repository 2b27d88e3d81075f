"""The node's key in its data dir, loaded from the settings (light: the CLI's key commands)."""

from __future__ import annotations

import logging

from network.identity import Identity, load_or_create
from orchestrator.config import Settings

log = logging.getLogger("remote_network.node")


def load_identity(settings: Settings) -> Identity:
    """Load (or create) the node key, warning when it is stored unencrypted."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    passphrase = settings.passphrase()
    identity, created = load_or_create(settings.key_path, passphrase)
    if created:
        log.info("created identity %s at %s", identity.peer_id, settings.key_path)
    if passphrase is None:
        log.warning("identity key %s is stored unencrypted (mode 0600); set RN_KEY_PASSPHRASE "
                    "or --key-passphrase-file to encrypt it", settings.key_path)
    return identity
