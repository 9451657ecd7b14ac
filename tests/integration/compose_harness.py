"""Helpers for tests that run docker-compose.yml in real containers (a Docker engine, no registry).

`docker_or_skip()` decides once whether the engine answers: a test module without an engine
skips with one line, and fails under CI=true, where the engine is part of the machine.
`build_image()` makes the node image the way a user without a registry does (deploy/base-image.sh,
deploy/wheels.sh, `docker build`), under a test tag that `remove_image()` deletes afterwards; the
Debian base image stays, as a CI cache would keep it. `Compose` runs one compose project under a
name of its own and always ends with `down -v`, so no container, network or volume outlives it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "strom-base:bookworm"
BUILD_IMAGE = "strom-build:bookworm"
TEST_IMAGE = "strom:compose-test"
HEALTHY_TIMEOUT_S = 90.0
COMMAND_TIMEOUT_S = 180.0


def compose_tool() -> list[str] | None:
    """`docker compose` (v2) where the plugin exists, else docker-compose (v1), else None."""
    if shutil.which("docker") and _ok(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _ok(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_or_skip() -> list[str]:
    """The compose command; skips (or fails under CI) when no engine or compose tool answers."""
    problem = None
    if shutil.which("docker") is None:
        problem = "no docker command"
    elif not _ok(["docker", "info"]):
        problem = "no Docker engine answers (docker info failed)"
    tool = compose_tool()
    if problem is None and tool is None:
        problem = "no compose tool (docker compose or docker-compose)"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}: CI machines have a running Docker engine with compose")
        pytest.skip(f"{problem}: compose tests need a Docker engine")
    assert tool is not None
    return tool


def run(command: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S, check: bool = True,
        **kwargs: object) -> subprocess.CompletedProcess[str]:  # fmt: skip
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, **kwargs
    )  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}"
        )
    return result  # type: ignore[no-any-return]


def image_exists(name: str) -> bool:
    return _ok(["docker", "image", "inspect", name])


def build_image(python: str) -> dict[str, float]:
    """Build TEST_IMAGE as a user without a registry would; returns seconds per step (and the
    image's size)."""
    timings: dict[str, float] = {}
    pulled = image_exists("python:3.11-slim") and image_exists("python:3.11")
    base, build = ("python:3.11-slim", "python:3.11") if pulled else (BASE_IMAGE, BUILD_IMAGE)
    local = not (image_exists(BASE_IMAGE) and image_exists(BUILD_IMAGE))
    if not pulled and local and not shutil.which("mmdebstrap"):
        problem = "mmdebstrap is missing (tests/system/packages.txt): no base image to build on"
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    for step, command in (
        ("base image", ["sh", "deploy/base-image.sh", BASE_IMAGE, BUILD_IMAGE]),
        ("wheels", ["sh", "deploy/wheels.sh", python]),
        ("docker build", ["docker", "build", "-q", "-f", "deploy/Dockerfile",
                          "--build-arg", f"BASE_IMAGE={base}", "--build-arg",
                          f"BUILD_IMAGE={build}", "-t", TEST_IMAGE, "."]),
    ):  # fmt: skip
        if step == "base image" and pulled:
            continue
        start = time.monotonic()
        run(command, timeout_s=600)
        timings[step] = time.monotonic() - start
    size = run(["docker", "image", "inspect", "--format", "{{.Size}}", TEST_IMAGE]).stdout
    timings["size MB"] = int(size) / 1e6
    return timings


def remove_image() -> None:
    run(["docker", "image", "rm", "-f", TEST_IMAGE], check=False)
    # The build stage's untagged image (deploy/Dockerfile labels it), and nobody else's.
    run(["docker", "image", "prune", "-f", "--filter", "label=org.strom.stage=build"], check=False)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


class Compose:
    """One compose project (`-p NAME`) over the given files, with the test image."""

    def __init__(self, tool: list[str], files: Sequence[str], project: str) -> None:
        self.project = project
        args = [arg for f in files for arg in ("-f", str(ROOT / f))]
        self.command = [*tool, "-p", project, *args]
        self.env = {**os.environ, "STROM_IMAGE": TEST_IMAGE}

    def __call__(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S,
                 check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return run([*self.command, *args], timeout_s=timeout_s, check=check, env=self.env)

    def services(self) -> list[str]:
        return self("config", "--services").stdout.split()

    def nodes(self) -> list[str]:
        return sorted(s for s in self.services() if s.startswith("strom"))

    def up(self) -> None:
        self("up", "-d", "--no-build", timeout_s=300)

    def down(self) -> None:
        self("down", "-v", "--remove-orphans", "-t", "5", check=False, timeout_s=300)

    def container(self, service: str) -> str:
        """The container id of `service` (running or stopped)."""
        ids = self("ps", "-a", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def inspect(self, service: str) -> dict[str, object]:
        out = run(["docker", "inspect", self.container(service)]).stdout
        state: dict[str, object] = json.loads(out)[0]
        return state

    def health(self, service: str) -> str:
        state = self.inspect(service)["State"]
        assert isinstance(state, dict)
        if not state.get("Running"):
            return "not running"
        return str(state.get("Health", {}).get("Status", "no healthcheck"))

    def wait_healthy(self, services: Sequence[str] | None = None,
                     timeout_s: float = HEALTHY_TIMEOUT_S) -> float:  # fmt: skip
        """Wait until every service's healthcheck passes; returns the seconds it took."""
        services = list(services or self.services())
        start = time.monotonic()
        deadline = start + timeout_s
        while True:
            states = {s: self.health(s) for s in services}
            if all(state == "healthy" for state in states.values()):
                return time.monotonic() - start
            if time.monotonic() > deadline:
                logs = {s: self.logs(s)[-1500:] for s, st in states.items() if st != "healthy"}
                raise AssertionError(f"not healthy within {timeout_s} s: {states}\n{logs}")
            time.sleep(1.0)

    def kill(self, service: str) -> None:
        """SIGKILL, like a crashed process (the kernel closes its sockets at once)."""
        run(["docker", "kill", self.container(service)])

    def disconnect(self, service: str) -> None:
        """A real partition: the container leaves the compose network (and so its published
        ports stop routing); its peers' connections to it time out."""
        run(["docker", "network", "disconnect", self.network(), self.container(service)])

    def reconnect(self, service: str) -> None:
        # Compose gave the container its service name as a network alias; a plain `connect`
        # would not, and the peers could no longer resolve strom<N> (found here, see README).
        run(["docker", "network", "connect", "--alias", service, self.network(),
             self.container(service)])  # fmt: skip

    def logs(self, service: str) -> str:
        result = self("logs", "--no-color", "--tail", "60", service, check=False)
        return result.stdout + result.stderr

    def network(self) -> str:
        return f"{self.project}_default"

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project still known to the engine."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, command in (
            ("containers", ["docker", "ps", "-aq", "--filter", label]),
            ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
            ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
        ):
            found[kind] = run(command).stdout.split()
        return found

    def client(self, *args: str, stdin: str | None = None,
               timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """`strom ARGS` in a throwaway container on the compose network (INTERNAL listeners)."""
        return run(
            ["docker", "run", "--rm", "-i", "--network", self.network(), "--entrypoint", "strom",
             "--label", f"com.docker.compose.project={self.project}", TEST_IMAGE, *args],
            timeout_s=timeout_s, input=stdin,
        )  # fmt: skip
