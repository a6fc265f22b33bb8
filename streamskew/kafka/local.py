"""Resolve and run a real single-node Apache Kafka (KRaft) on loopback.

``streamskew local-kafka start`` gives developers, tests and CI a genuine broker without
Docker or a downloaded tarball: the broker's jars come from Maven Central through ``mvn``
(resolved once into a cache folder), and the broker runs as a detached ``java`` process
(combined broker + controller, node id 1) listening on ``127.0.0.1`` only.

Layout::

    $STREAMSKEW_CACHE_DIR (default ~/.cache/streamskew)
      kafka/<version>/            pom.xml, lib/ (the runtime classpath), lib/.complete, .lock
      local-kafka/<port>/         default broker directory for a port:
        server.properties, log4j2.xml, data/ (log.dirs), logs/server.log (broker log, INFO),
        kafka.out (JVM stdout/stderr), kafka.pid, local-kafka.json (state for stop/status)

Python API::

    kafka = LocalKafka(port=0, directory=tmp)   # 0 picks a free port
    bootstrap = kafka.start()                   # "127.0.0.1:PORT", once it answers metadata
    kafka.status()                              # {"pid": ..., "running": True, ...}
    kafka.stop()                                # SIGTERM, SIGKILL after the timeout

Environment:
    STREAMSKEW_CACHE_DIR      root of the cache (default ``~/.cache/streamskew``)
    STREAMSKEW_KAFKA_VERSION  Kafka version to resolve (default ``DEFAULT_KAFKA_VERSION``)
    JAVA_HOME                 used for ``$JAVA_HOME/bin/java`` when set, else ``java`` on PATH
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

log = logging.getLogger(__name__)

#: Kafka release resolved from Maven Central unless STREAMSKEW_KAFKA_VERSION says otherwise.
DEFAULT_KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
#: Fallback log4j2 version; normally the log4j-core version that Kafka itself depends on is used.
DEFAULT_LOG4J_VERSION = "2.24.3"
MAVEN_DEPENDENCY_PLUGIN_VERSION = "3.8.1"
MIN_JAVA_MAJOR = 17
DEFAULT_PORT = 9092
HOST = "127.0.0.1"
HEAP_OPTS = ("-Xmx512m", "-Xms256m")

ENV_CACHE_DIR = "STREAMSKEW_CACHE_DIR"
ENV_KAFKA_VERSION = "STREAMSKEW_KAFKA_VERSION"

STATE_FILE = "local-kafka.json"
PID_FILE = "kafka.pid"
PROCESS_LOG = "kafka.out"
SERVER_LOG = "logs/server.log"
_COMPLETE_MARKER = ".complete"
_MVN_TIMEOUT_S = 1800.0
_LOG_TAIL_LINES = 30

_LOG4J2_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by streamskew local-kafka: the broker logs at INFO to ${sys:kafka.logs.dir}. -->
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <RollingFile name="server" fileName="${sys:kafka.logs.dir}/server.log"
                 filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
"""


class LocalKafkaError(RuntimeError):
    """A local Kafka broker could not be resolved, started or stopped; the message says why
    and what to do about it."""


# --------------------------------------------------------------------------- paths and versions


def cache_root() -> Path:
    """Root of streamskew's cache: ``$STREAMSKEW_CACHE_DIR`` or ``~/.cache/streamskew``."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "streamskew"


def default_kafka_version() -> str:
    """The Kafka version to use: ``$STREAMSKEW_KAFKA_VERSION`` or ``DEFAULT_KAFKA_VERSION``."""
    return os.environ.get(ENV_KAFKA_VERSION) or DEFAULT_KAFKA_VERSION


def kafka_cache_dir(version: str | None = None) -> Path:
    """Folder that holds the pom.xml and the resolved ``lib/`` of one Kafka version."""
    return cache_root() / "kafka" / (version or default_kafka_version())


def default_directory(port: int) -> Path:
    """Default broker directory for a port: ``<cache root>/local-kafka/<port>``."""
    return cache_root() / "local-kafka" / str(port)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


# --------------------------------------------------------------------------- tool checks


def find_java() -> str:
    """Path of a Java >= 17 executable (``$JAVA_HOME/bin/java`` or ``java`` on PATH).

    Raises:
        LocalKafkaError: Java is missing or too old.
    """
    java_home = os.environ.get("JAVA_HOME")
    java: str | None = None
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        java = str(Path(java_home) / "bin" / "java")
    else:
        java = shutil.which("java")
    if not java:
        raise LocalKafkaError(
            f"Java {MIN_JAVA_MAJOR}+ was not found: install a JDK/JRE {MIN_JAVA_MAJOR} or newer "
            "(e.g. `apt-get install openjdk-17-jre-headless`) and put `java` on PATH or set "
            "JAVA_HOME."
        )
    major = java_major_version(java)
    if major < MIN_JAVA_MAJOR:
        raise LocalKafkaError(
            f"{java} is Java {major}, but Kafka 4 needs Java {MIN_JAVA_MAJOR} or newer: install "
            f"a newer JDK/JRE and put it first on PATH or point JAVA_HOME at it."
        )
    return java


def java_major_version(java: str = "java") -> int:
    """Major version of a Java executable, parsed from ``java -version`` (1.8 -> 8).

    Raises:
        LocalKafkaError: the executable cannot be run or its output is not understood.
    """
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"could not run `{java} -version`: {exc}") from exc
    text = out.stderr + out.stdout
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        raise LocalKafkaError(f"could not parse the Java version from `{java} -version`:\n{text}")
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_392" style
        major = int(m.group(2))
    return major


def find_maven() -> str:
    """Path of ``mvn``.

    Raises:
        LocalKafkaError: Maven is missing.
    """
    mvn = shutil.which("mvn")
    if not mvn:
        raise LocalKafkaError(
            "Maven (`mvn`) was not found on PATH; it is needed once to fetch Kafka's jars from "
            "Maven Central: install it (e.g. `apt-get install maven`)."
        )
    return mvn


# --------------------------------------------------------------------------- resolution


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive ``fcntl`` lock on ``path`` (blocks; says so when another process holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that holds %s", path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def resolution_info(version: str | None = None) -> dict[str, Any] | None:
    """What a completed resolution recorded (versions, jar list), or None if not resolved."""
    lib = kafka_cache_dir(version) / "lib"
    marker = lib / _COMPLETE_MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    jars = info.get("jars")
    if not isinstance(jars, list) or not jars:
        return None
    if not all((lib / name).is_file() for name in jars):
        return None
    return info


def _pom(deps: list[tuple[str, str, str]]) -> str:
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by streamskew local-kafka: only used to fetch Kafka's runtime classpath. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.streamskew.local</groupId>
  <artifactId>local-kafka-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{MAVEN_DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def _run_mvn(mvn: str, cache: Path, out_dir: Path, version: str) -> None:
    cmd = [
        mvn, "-q", "-B", "-f", str(cache / "pom.xml"),
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        f"-DoutputDirectory={out_dir}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd,
            cwd=cache,
            capture_output=True,
            text=True,
            timeout=_MVN_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(
            f"`mvn dependency:copy-dependencies` for Kafka {version} did not finish in "
            f"{_MVN_TIMEOUT_S:.0f}s; check access to Maven Central and retry."
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise LocalKafkaError(
            f"Maven could not resolve org.apache.kafka:kafka_{SCALA_VERSION}:{version} "
            f"(mvn exit code {proc.returncode}). Check that Maven Central (or the mirror in "
            f"~/.m2/settings.xml) is reachable, or pick another version with "
            f"{ENV_KAFKA_VERSION}. Command: {' '.join(cmd)}\n--- mvn output (tail) ---\n{tail}"
        )


def _jar_version(lib: Path, artifact: str) -> str | None:
    pattern = re.compile(rf"^{re.escape(artifact)}-(\d[\w.\-]*)\.jar$")
    for jar in sorted(lib.glob("*.jar")):
        m = pattern.match(jar.name)
        if m:
            return m.group(1)
    return None


def resolve_kafka(version: str | None = None) -> Path:
    """Resolve Kafka's runtime classpath with Maven, once; return the ``lib`` folder.

    Two passes: first ``kafka_2.13`` alone, to learn which slf4j major and log4j-core
    version that Kafka uses; then again with the matching log4j2 slf4j binding
    (``log4j-slf4j-impl`` for slf4j 1.x, ``log4j-slf4j2-impl`` for 2.x) pinned to the same
    log4j version. A marker file records success; later calls return at once. An ``fcntl``
    lock keeps concurrent resolutions of the same version from clobbering each other.

    Raises:
        LocalKafkaError: Maven is missing or the resolution failed (with the mvn output tail).
    """
    version = version or default_kafka_version()
    cache = kafka_cache_dir(version)
    lib = cache / "lib"
    if resolution_info(version) is not None:
        return lib
    mvn = find_maven()
    with _file_lock(cache / ".lock"):
        if resolution_info(version) is not None:  # another process finished meanwhile
            return lib
        started = time.monotonic()
        log.info(
            "resolving Apache Kafka %s from Maven Central into %s (first run only)...", version, lib
        )
        tmp = cache / "lib.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        deps = [("org.apache.kafka", f"kafka_{SCALA_VERSION}", version)]
        (cache / "pom.xml").write_text(_pom(deps))
        _run_mvn(mvn, cache, tmp, version)

        slf4j = _jar_version(tmp, "slf4j-api") or "1.7"
        log4j = _jar_version(tmp, "log4j-core") or DEFAULT_LOG4J_VERSION
        binding = "log4j-slf4j2-impl" if _version_tuple(slf4j)[:1] >= (2,) else "log4j-slf4j-impl"
        deps += [
            ("org.apache.logging.log4j", "log4j-api", log4j),
            ("org.apache.logging.log4j", "log4j-core", log4j),
            ("org.apache.logging.log4j", binding, log4j),
        ]
        (cache / "pom.xml").write_text(_pom(deps))
        _run_mvn(mvn, cache, tmp, version)

        jars = sorted(p.name for p in tmp.glob("*.jar"))
        expected = f"kafka_{SCALA_VERSION}-{version}.jar"
        if expected not in jars or f"{binding}-{log4j}.jar" not in jars:
            raise LocalKafkaError(
                f"Maven finished but {tmp} lacks {expected} or {binding}-{log4j}.jar; "
                f"delete {cache} and retry."
            )
        info = {
            "kafka_version": version,
            "scala_version": SCALA_VERSION,
            "slf4j_version": slf4j,
            "log4j_version": log4j,
            "slf4j_binding": binding,
            "resolved_in_s": round(time.monotonic() - started, 1),
            "jars": jars,
        }
        (tmp / _COMPLETE_MARKER).write_text(json.dumps(info, indent=2))
        shutil.rmtree(lib, ignore_errors=True)
        tmp.rename(lib)
        log.info(
            "resolved Kafka %s (%d jars, log4j %s + %s) in %.1fs",
            version,
            len(jars),
            log4j,
            binding,
            info["resolved_in_s"],
        )
    return lib


# --------------------------------------------------------------------------- process helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def check_port_free(port: int, what: str = "Kafka") -> None:
    """Raise LocalKafkaError naming ``port`` if it cannot be bound on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same option as the broker's server socket, so TIME_WAIT leftovers don't count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise LocalKafkaError(
                f"port {port} on {HOST} is already in use ({exc.strerror or exc}), so the local "
                f"{what} cannot listen there: stop whatever holds it (if it is a local Kafka: "
                f"`streamskew local-kafka stop --port {port}`) or choose another port "
                f"(--port 0 picks a free one)."
            ) from exc


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (zombies count as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
    except (OSError, IndexError):
        pass
    return True


def _tcp_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _broker_answers(bootstrap: str, timeout_s: float,
                    settings: dict[str, Any] | None = None) -> bool:
    """True once the broker answers a cluster-metadata request listing a broker."""
    from kafka import KafkaAdminClient  # imported lazily: keeps the CLI import cheap

    ms = max(500, int(timeout_s * 1000))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="streamskew-local-kafka-probe",
            bootstrap_timeout_ms=ms,
            request_timeout_ms=ms,
            **(settings or {}),
        )
    except Exception:
        return False
    try:
        brokers = admin.describe_cluster().get("brokers") or []
        return any(not b.get("is_fenced", False) for b in brokers)
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _cluster_id() -> str:
    """A random 22-character base64url Kafka cluster id (never starting with '-')."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


# --------------------------------------------------------------------------- the broker


class LocalKafka:
    """A single-node Kafka (combined KRaft broker + controller, node id 1) on 127.0.0.1.

    Args:
        port: client (PLAINTEXT) port; 0 picks a free one at ``start``.
        directory: broker directory (config, data, logs, pid/state files); default
            ``<cache root>/local-kafka/<port>``.
        controller_port: KRaft controller port; default a free port picked at ``start``.
        version: Kafka version; default ``$STREAMSKEW_KAFKA_VERSION`` or
            ``DEFAULT_KAFKA_VERSION``.

    ``stop`` and ``status`` read the state file in the directory, so they also work on a
    broker started by another process (e.g. ``streamskew local-kafka start``).
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        directory: str | os.PathLike[str] | None = None,
        controller_port: int | None = None,
        *,
        version: str | None = None,
        scram: tuple[str, str] | None = None,
        sasl_port: int | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self.port = port
        self.controller_port = controller_port
        self.scram = scram  # (user, password): a SASL_PLAINTEXT listener with SCRAM users
        self.sasl_port = sasl_port
        self._directory = Path(directory).expanduser().resolve() if directory else None
        self.version = version or default_kafka_version()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths ------------------------------------------------------------------------------

    @property
    def directory(self) -> Path | None:
        """The broker directory (None while ``port`` is 0 and no directory was given)."""
        if self._directory is not None:
            return self._directory
        if self.port == 0:
            return None
        return default_directory(self.port)

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``."""
        return f"{HOST}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        """``"127.0.0.1:SASL_PORT"`` of the SCRAM listener (None without ``scram``)."""
        return f"{HOST}:{self.sasl_port}" if self.scram and self.sasl_port else None

    def _state_path(self) -> Path | None:
        d = self.directory
        return d / STATE_FILE if d else None

    def _read_state(self) -> dict[str, Any] | None:
        path = self._state_path()
        if path is None:
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None

    def _clear_state(self) -> None:
        d = self.directory
        if d is None:
            return
        for name in (STATE_FILE, PID_FILE):
            with contextlib.suppress(FileNotFoundError):
                (d / name).unlink()

    def _is_our_broker(self, pid: int) -> bool:
        """Alive and really this directory's ``kafka.Kafka`` (guards against pid reuse)."""
        if not pid_alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return True  # no /proc to double-check with: trust the pid file
        props = str(self.directory / "server.properties").encode() if self.directory else b""
        return b"kafka.Kafka" in cmdline and props in cmdline

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        """The broker's state, or None if none was started in this directory (or it was
        stopped with ``stop``).

        Keys: ``pid``, ``bootstrap``, ``port``, ``controller_port``, ``directory``,
        ``version``, ``started_at``, ``log`` and ``running`` (False after a crash).
        """
        state = self._read_state()
        if state is None:
            return None
        keys = (
            "pid",
            "bootstrap",
            "port",
            "controller_port",
            "directory",
            "version",
            "started_at",
            "log",
        )
        out = {k: state.get(k) for k in keys}
        out["running"] = self._is_our_broker(state["pid"])
        return out

    # -- start ------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0, *, fresh: bool = False) -> str:
        """Start the broker and wait until it answers a metadata request.

        Args:
            timeout: seconds allowed for formatting and startup (a first-time Maven
                resolution is not counted).
            fresh: delete earlier data in the directory first; otherwise data (and the
                cluster id) from an earlier run in the same directory are kept.

        Returns:
            The bootstrap address ``"127.0.0.1:PORT"``.

        Raises:
            LocalKafkaError: Java/Maven missing, port taken, resolution failed, the broker
                exited or did not answer in time (with the tail of its log).
        """
        java = find_java()

        state = self._read_state()
        if state is not None and self._is_our_broker(state["pid"]):
            raise LocalKafkaError(
                f"a local Kafka is already running on port {state.get('port')} from "
                f"{self.directory} (pid {state['pid']}, bootstrap {state.get('bootstrap')}); "
                f"use it, or stop it first with "
                f"`streamskew local-kafka stop --dir {self.directory}`."
            )

        if self.port == 0:
            self.port = free_port()
        else:
            check_port_free(self.port)
        if self.controller_port is None:
            self.controller_port = free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()
        else:
            if self.controller_port == self.port:
                raise LocalKafkaError(
                    f"controller port {self.controller_port} equals the client port; "
                    "choose a different controller port (or leave it unset)."
                )
            check_port_free(self.controller_port, what="Kafka controller")

        if self.scram:
            if self.sasl_port is None:
                self.sasl_port = free_port()
                while self.sasl_port in (self.port, self.controller_port):
                    self.sasl_port = free_port()
            else:
                check_port_free(self.sasl_port, what="Kafka SASL")

        directory = self.directory
        assert directory is not None
        directory.mkdir(parents=True, exist_ok=True)
        self._clear_state()

        lib = resolve_kafka(self.version)
        classpath = f"{lib}/*"
        data = directory / "data"
        logs = directory / "logs"
        if fresh:
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True, exist_ok=True)
        log4j = directory / "log4j2.xml"
        log4j.write_text(_LOG4J2_XML)
        props = directory / "server.properties"
        props.write_text(self._server_properties(data))
        jvm_log_opts = [f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={logs}"]

        deadline = time.monotonic() + timeout
        if not (data / "meta.properties").exists():
            self._format_storage(java, classpath, jvm_log_opts, props, deadline)

        cmd = [
            java, *HEAP_OPTS,
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true", *jvm_log_opts,
            "-cp", classpath, "kafka.Kafka", str(props),
        ]  # fmt: skip
        out_path = directory / PROCESS_LOG
        with open(out_path, "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        pid = self._proc.pid
        (directory / PID_FILE).write_text(f"{pid}\n")
        state = {
            "pid": pid,
            "bootstrap": self.bootstrap,
            "port": self.port,
            "controller_port": self.controller_port,
            "directory": str(directory),
            "version": self.version,
            "started_at": time.time(),
            "log": str(directory / SERVER_LOG),
            "sasl_bootstrap": self.sasl_bootstrap,
            "cmd": cmd,
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2))
        log.info(
            "started Kafka %s (pid %d) in %s, waiting for %s...",
            self.version,
            pid,
            directory,
            self.bootstrap,
        )
        try:
            self._wait_ready(deadline, timeout)
            if self.scram:
                self._add_scram_user(*self.scram)
        except BaseException:
            self._kill_now()
            raise
        return self.bootstrap

    def _add_scram_user(self, user: str, password: str) -> None:
        """Create (or reset) the SCRAM-SHA-256 and -512 credentials of ``user``, through the
        PLAINTEXT listener (the broker has no authorizer: this is a development broker)."""
        from kafka import KafkaAdminClient
        from kafka.admin import ScramMechanism, UserScramCredentialUpsertion

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512):
                # One mechanism per request: Kafka refuses two alterations of one user.
                errors = admin.alter_user_scram_credentials(
                    [UserScramCredentialUpsertion(user, mechanism, password)])
                failed = {name: error for name, error in (errors or {}).items() if error}
                if failed:
                    raise LocalKafkaError(f"could not create the SCRAM user {user!r}: {failed}")
        finally:
            admin.close()
        # Credentials reach the SASL listener through the metadata log: wait until they work.
        deadline = time.monotonic() + 30
        while not _broker_answers(self.sasl_bootstrap or "", 5.0, self._sasl_settings()):
            if time.monotonic() > deadline:
                raise LocalKafkaError(f"the SCRAM listener {self.sasl_bootstrap} does not "
                                      f"accept {user!r}\n{self._logs_tail()}")
            time.sleep(0.2)  # poll interval while the broker applies the new credentials

    def _sasl_settings(self) -> dict[str, Any]:
        assert self.scram is not None
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_plain_username": self.scram[0], "sasl_plain_password": self.scram[1]}

    def _server_properties(self, data: Path) -> str:
        lines = [
            "# Written by streamskew local-kafka: one combined KRaft broker + controller.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{self.controller_port}",
            f"listeners=PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}"
            + (f",SASL_PLAINTEXT://{HOST}:{self.sasl_port}" if self.scram else ""),
            f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}"
            + (f",SASL_PLAINTEXT://{HOST}:{self.sasl_port}" if self.scram else ""),
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
            + (",SASL_PLAINTEXT:SASL_PLAINTEXT" if self.scram else ""),
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "group.initial.rebalance.delay.ms=0",
            "group.min.session.timeout.ms=1000",
            # Sized for a 2-core machine and a 512 MB heap.
            "num.network.threads=2",
            "num.io.threads=4",
            "num.recovery.threads.per.data.dir=1",
            "log.cleaner.dedupe.buffer.size=16777216",
        ]
        if self.scram:  # clients authenticate with SCRAM; brokers talk over PLAINTEXT
            login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            lines += [
                "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512",
                f"listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config={login}",
                f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={login}",
            ]
        if _version_tuple(self.version) >= (4, 0):
            lines += [
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
            ]
        return "\n".join(lines) + "\n"

    def _format_storage(
        self, java: str, classpath: str, jvm_log_opts: list[str], props: Path, deadline: float
    ) -> None:
        # With a static quorum (controller.quorum.voters) neither --standalone nor
        # --initial-controllers applies; both are for dynamic quorums.
        cmd = [
            java, "-Xmx256m", *jvm_log_opts, "-cp", classpath,
            "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props),
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
                timeout=max(10.0, deadline - time.monotonic()),
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(f"formatting Kafka storage timed out: {' '.join(cmd)}") from exc
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_LOG_TAIL_LINES:])
            raise LocalKafkaError(
                f"formatting Kafka storage failed (exit code {proc.returncode}); if "
                f"{props.parent / 'data'} holds data from another Kafka version, start with "
                f"--fresh or delete it.\n--- StorageTool output ---\n{tail}"
            )

    def _logs_tail(self) -> str:
        d = self.directory
        assert d is not None
        parts = []
        for path in (d / PROCESS_LOG, d / SERVER_LOG):
            tail = _tail(path)
            if tail:
                parts.append(f"--- last lines of {path} ---\n{tail}")
        return "\n".join(parts) or "(no log output)"

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        proc = self._proc
        assert proc is not None
        while True:
            rc = proc.poll()
            if rc is not None:
                raise LocalKafkaError(
                    f"the Kafka broker exited with code {rc} while starting on port "
                    f"{self.port}; see the log below (if {self.directory / 'data'} holds "
                    f"stale data from another setup, retry with --fresh / start(fresh=True))."
                    f"\n{self._logs_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalKafkaError(
                    f"the Kafka broker did not answer on {self.bootstrap} within {timeout:.0f}s "
                    f"(it was killed); retry with a longer timeout if the machine is "
                    f"busy.\n{self._logs_tail()}"
                )
            if _tcp_open(self.port) and _broker_answers(self.bootstrap, min(5.0, remaining)):
                return
            # Poll interval: also returns immediately if the broker dies meanwhile.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(0.25, max(0.0, deadline - time.monotonic())))

    def _kill_now(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=30)
        self._clear_state()

    # -- stop -------------------------------------------------------------------------------

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=timeout)  # also reaps our own child
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)  # poll interval for a process that is not our child
        return True

    def stop(self, timeout: float = 60.0, kill: bool = False) -> bool:
        """Stop the broker: SIGTERM (clean shutdown) and wait; SIGKILL after ``timeout``
        seconds, or straight away when ``kill`` is True.

        Returns:
            True if a running broker was stopped, False if none was running.

        Raises:
            LocalKafkaError: the process survived SIGKILL (should not happen).
        """
        state = self._read_state()
        if state is None:
            return False
        pid = state["pid"]
        if not self._is_our_broker(pid):
            if self._proc is not None and self._proc.pid == pid:
                self._proc.poll()  # reap a crashed child
            self._clear_state()
            return False
        sig = signal.SIGKILL if kill else signal.SIGTERM
        log.info("stopping Kafka (pid %d) with %s", pid, sig.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not self._wait_exit(pid, timeout if not kill else 30.0):
            if not kill:
                log.warning("Kafka (pid %d) still running after %.0fs: SIGKILL", pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 30.0):
                raise LocalKafkaError(f"Kafka (pid {pid}) did not exit even after SIGKILL.")
        self._clear_state()
        return True

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- CLI


_port_option = click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Client port on 127.0.0.1 (start: 0 picks a free one).",
)
_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Broker directory [default: <cache>/local-kafka/<port>].",
)


@click.group(name="local-kafka")
def local_kafka() -> None:
    """Run a real single-node Apache Kafka (KRaft) on 127.0.0.1 for development and tests.

    The jars are fetched once from Maven Central with `mvn` (needs Java 17+ and Maven).
    """


@local_kafka.command("start")
@_port_option
@_dir_option
@click.option(
    "--controller-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="KRaft controller port [default: a free port].",
)
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for the broker to answer.",
)
@click.option("--fresh", is_flag=True, help="Delete earlier data in the directory first.")
@click.option(
    "--scram",
    metavar="USER:PASSWORD",
    default=None,
    help="Also listen with SASL_PLAINTEXT and SCRAM-SHA-256/512, with this user (to try "
    "authentication locally).",
)
@click.option(
    "--sasl-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the SCRAM listener [default: a free port].",
)
def start_command(
    port: int,
    directory: Path | None,
    controller_port: int | None,
    timeout: float,
    fresh: bool,
    scram: str | None,
    sasl_port: int | None,
) -> None:
    """Start the broker in the background and print its bootstrap address."""
    credentials = None
    if scram is not None:
        user, sep, password = scram.partition(":")
        if not (sep and user and password):
            raise click.BadParameter("use USER:PASSWORD", param_hint="--scram")
        credentials = (user, password)
    kafka = LocalKafka(
        port=port,
        directory=directory,
        controller_port=controller_port,
        scram=credentials,
        sasl_port=sasl_port,
    )
    try:
        bootstrap = kafka.start(timeout=timeout, fresh=fresh)
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info(
        "Kafka %s is up at %s (dir %s); stop it with `streamskew local-kafka stop --port %d`",
        kafka.version,
        bootstrap,
        kafka.directory,
        kafka.port,
    )
    if kafka.sasl_bootstrap:
        log.info(
            "SCRAM listener at %s: security_protocol = \"SASL_PLAINTEXT\", sasl_mechanism = "
            "\"SCRAM-SHA-256\" (or -512), sasl_plain_username = %r",
            kafka.sasl_bootstrap,
            credentials[0] if credentials else "",
        )
    click.echo(bootstrap)


@local_kafka.command("stop")
@_port_option
@_dir_option
@click.option("--kill", is_flag=True, help="SIGKILL at once instead of a clean shutdown.")
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for a clean shutdown before SIGKILL.",
)
def stop_command(port: int, directory: Path | None, kill: bool, timeout: float) -> None:
    """Stop the broker started for --port (or in --dir)."""
    kafka = LocalKafka(port=port, directory=directory)
    try:
        stopped = kafka.stop(timeout=timeout, kill=kill)
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    if stopped:
        click.echo(f"stopped the local Kafka in {kafka.directory}")
    else:
        click.echo(f"no local Kafka was running in {kafka.directory}")


@local_kafka.command("status")
@_port_option
@_dir_option
def status_command(port: int, directory: Path | None) -> None:
    """Print the broker's state as JSON; exit code 0 if it runs, 1 if not."""
    kafka = LocalKafka(port=port, directory=directory)
    st = kafka.status()
    if st is None:
        st = {"directory": str(kafka.directory), "running": False}
    click.echo(json.dumps(st, indent=2))
    sys.exit(0 if st["running"] else 1)


@local_kafka.command("resolve")
def resolve_command() -> None:
    """Fetch Kafka's jars with Maven now (done by `start` anyway) and print the lib folder."""
    try:
        lib = resolve_kafka()
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(lib))


if __name__ == "__main__":
    local_kafka()
