"""Helpers shared by the API tests: raw clients and direct rows in a running node's database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from tests.support.node_process import NodeProcess


def raw_client(node: NodeProcess, *, token: str | None = None) -> httpx.Client:
    """An HTTPS client with no login (or with the given bearer token)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=node.https_url, verify=False, timeout=30, headers=headers)


def db_path(node: NodeProcess) -> Path:
    return node.data_dir / "node.db"


def insert(node: NodeProcess, table: str, **row: Any) -> int:
    """Insert one row into the node's SQLite database while it runs; returns the row id."""
    values = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
    cols = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    with sqlite3.connect(db_path(node), timeout=30) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        cur = conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(values.values()))
        row_id = int(cur.lastrowid or 0)
    conn.close()
    return row_id


def count(node: NodeProcess, table: str, where: str, *params: Any) -> int:
    with sqlite3.connect(db_path(node), timeout=30) as conn:
        (n,) = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", params).fetchone()
    conn.close()
    return int(n)
