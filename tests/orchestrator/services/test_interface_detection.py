"""Interface detection from image configs, Dockerfiles and compose services (pure functions)."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.services.interface_detection import (
    compose_service,
    dockerfile_instructions,
    from_compose,
    from_dockerfile,
    from_image_config,
    suggest,
)


def triples(items: list) -> list[tuple[str, str, str]]:
    return [(str(s.interface_type), s.path, s.mount_function) for s in items]


def test_suggest_always_starts_with_the_streams_and_dedupes() -> None:
    a = from_image_config({"Env": ["DATABASE_URL=x"]})
    b = from_dockerfile("FROM scratch\nENV DATABASE_URL=y\n")
    out = triples(suggest(a, b))
    assert out == [("STDIN", "", ""), ("STDOUT", "", ""), ("STDERR", "", ""), ("LOGS", "", ""),
                   ("ENV", "DATABASE_URL", "")]
    assert triples(suggest())[:4] == out[:4]


def test_image_config() -> None:
    config = {
        "Env": ["PATH=/usr/bin", "HOME=/root", "LC_ALL=C", "DATABASE_URL=postgres://", "MODE"],
        "Volumes": {"/app/data": {}, "/app/output": {}, "cache": {}},
        "ExposedPorts": {"9090/tcp": {}, "8080/tcp": {}},
        "WorkingDir": "/srv",
    }
    assert triples(from_image_config(config)) == [
        ("ENV", "DATABASE_URL", ""), ("ENV", "MODE", ""),
        ("MOUNT", "/app/data", "INPUT"), ("MOUNT", "/app/output", "OUTPUT"),
        ("MOUNT", "/srv/cache", "INPUT"),
        ("ENV", "PORT", ""), ("ENV", "PORT_9090", ""),
    ]
    assert from_image_config(None) == [] and from_image_config({"Env": None}) == []


def test_dockerfile_instructions_join_continuations_and_skip_comments() -> None:
    text = "# comment\nFROM scratch\nENV A=1 \\\n    B=2\n\n  # inner\nRUN echo hi\n"
    assert dockerfile_instructions(text) == [("FROM", "scratch"), ("ENV", "A=1 B=2"),
                                             ("RUN", "echo hi")]


def test_dockerfile_detection() -> None:
    text = """\
ARG BASE=scratch
FROM $BASE
WORKDIR /app
ENV API_KEY=abc \\
    LOG_LEVEL="info debug"
ENV LEGACY value with spaces
ARG VERSION=1.0
VOLUME ["/data", "results"]
VOLUME /in /tmp/out
EXPOSE 8080 53/udp
"""
    assert triples(from_dockerfile(text)) == [
        ("ENV", "API_KEY", ""), ("ENV", "LOG_LEVEL", ""), ("ENV", "LEGACY", ""),
        ("ARG", "VERSION", ""),
        ("MOUNT", "/data", "INPUT"), ("MOUNT", "/app/results", "OUTPUT"),
        ("MOUNT", "/in", "INPUT"), ("MOUNT", "/tmp/out", "OUTPUT"),
        ("ENV", "PORT", ""), ("ENV", "PORT_53", ""),
    ]
    version = next(s for s in from_dockerfile(text) if s.path == "VERSION")
    assert "default: 1.0" in version.description


def test_dockerfile_multistage_keeps_final_stage_and_inherits() -> None:
    text = """\
FROM scratch AS build
ENV BUILD_ONLY=1
FROM scratch AS base
ENV SHARED=1
FROM base
VOLUME /work
"""
    assert triples(from_dockerfile(text)) == [("ENV", "SHARED", ""),
                                             ("MOUNT", "/work", "INPUT")]
    assert from_dockerfile("") == [] and from_dockerfile("# nothing\n") == []


COMPOSE = """\
services:
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: x
  app:
    build:
      context: ./app
      dockerfile: Dockerfile.prod
    working_dir: /srv
    environment:
      - API_TOKEN=abc
      - DEBUG
    volumes:
      - ./input:/srv/input:ro
      - results:/srv/results
      - type: bind
        source: ./conf
        target: conf
        read_only: true
      - /anonymous
    ports:
      - "8000:80"
      - 127.0.0.1:9000:9001/udp
      - target: 7000
"""


def test_compose_service_prefers_build_then_image() -> None:
    name, svc = compose_service(yaml.safe_load(COMPOSE))
    assert name == "app" and svc["build"]["dockerfile"] == "Dockerfile.prod"
    name, _ = compose_service({"services": {"a": {"command": "x"}, "b": {"image": "busybox"}}})
    assert name == "b"
    for bad in (None, {}, {"services": {}}, {"services": {"a": {"command": "x"}}}):
        with pytest.raises(ValueError):
            compose_service(bad)


def test_compose_detection() -> None:
    _, svc = compose_service(yaml.safe_load(COMPOSE))
    assert triples(from_compose(svc)) == [
        ("ENV", "API_TOKEN", ""), ("ENV", "DEBUG", ""),
        ("MOUNT", "/srv/input", "INPUT"), ("MOUNT", "/srv/results", "OUTPUT"),
        ("MOUNT", "/srv/conf", "INPUT"), ("MOUNT", "/anonymous", "INPUT"),
        ("ENV", "PORT", ""), ("ENV", "PORT_9001", ""), ("ENV", "PORT_7000", ""),
    ]
    env_map = from_compose({"environment": {"A": 1, "PATH": "/bin"}})
    assert triples(env_map) == [("ENV", "A", "")]
