"""Apache Kafka, run locally on the JDK: the default broker of `make run` and of the tests.

The jars come from Maven Central through ``deploy/kafka/pom.xml`` (the broker, its
command-line tools and a log4j2 binding, versions pinned there) and are copied once into a
cache outside the repository. A node is a combined KRaft broker and controller on loopback
ports; a cluster is three of them with a static controller quorum.

Command line (``python -m deploy.kafka``):

- ``fetch``: download the jars into the cache (idempotent) and print where they are;
- ``start [--dir D] [--port P]``: run one node in the foreground (Ctrl-C stops it);
- ``cluster [--dir D]``: run a three-node cluster in the foreground;
- ``tool NAME ARGS...``: run one of Kafka's own tools (``topics``, ``consumer-groups``,
  ``console-consumer``, ``console-producer``, ``get-offsets``, ``producer-perf``, ``acls``,
  ``storage``), with ``--bootstrap-server`` and the admin's client properties added when
  they are missing; given ``--bootstrap-controller`` instead (``acls``), the tool talks to
  the controller listener with the admin's SASL/PLAIN credentials.

Security is on by default, on both listeners; nothing is served to a client without
credentials. Clients connect to a SASL_PLAINTEXT listener with SCRAM-SHA-512; the
credentials of an admin, of the brokers and of one principal per service are created when
the storage is formatted and written to ``DIR/credentials.env`` (mode 0600), which the dev
launcher, the tools and the test fixtures read. The controller listener is SASL_PLAINTEXT
too, with SASL/PLAIN: in KRaft the SCRAM credentials live in the metadata log, which a
controller must serve before it can read it, so the controller checks the passwords of
its JAAS configuration instead: the brokers' (``broker``, which the nodes use to register
and for the Raft quorum) and the admin's (for ``--bootstrap-controller`` tools), the same
passwords as their SCRAM ones, written into each node's ``server.properties`` (mode 0600)
at every start from ``credentials.env``, so storage formatted earlier starts as it is.
Only the admin and the brokers are super users (no ``User:ANONYMOUS``), nothing is
allowed without an ACL (``allow.everyone.if.no.acl.found=false``), and services get only
the ACLs of ``services.runtime.acl``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from deploy.ports import free_port, port_is_free
from services.runtime.kafka_auth import KafkaSecurity, read_env_file, security_configured

ROOT = Path(__file__).resolve().parent.parent
POM = ROOT / "deploy" / "kafka" / "pom.xml"
DEFAULT_PORT = 19092

# Kafka's shell scripts are thin wrappers around these main classes.
TOOLS = {
    "topics": "org.apache.kafka.tools.TopicCommand",
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "producer-perf": "org.apache.kafka.tools.ProducerPerformance",
    "storage": "kafka.tools.StorageTool",
}
TOOLS["acls"] = "org.apache.kafka.tools.AclCommand"
NEEDS_BOOTSTRAP = {"topics", "consumer-groups", "console-consumer", "console-producer"}
NEEDS_BOOTSTRAP |= {"get-offsets", "acls"}
# How each tool takes a client properties file (SASL settings).
CONFIG_FLAG = {
    "topics": "--command-config",
    "consumer-groups": "--command-config",
    "get-offsets": "--command-config",
    "acls": "--command-config",
    "console-consumer": "--consumer.config",
    "console-producer": "--producer.config",
    "producer-perf": "--producer.config",
}
SERVICES = ("intake", "routing", "consultation", "notification", "console")
ADMIN, BROKER = "admin", "broker"
MECHANISM = "SCRAM-SHA-512"
CONTROLLER_MECHANISM = "PLAIN"  # SCRAM credentials live in the metadata the controller serves

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.target = {target}
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
"""


class KafkaUnavailable(RuntimeError):
    """Java, Maven or the jars are missing; the message says what to install."""


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not match:
        raise KafkaUnavailable(f"{POM}: no <kafka.version> property")
    return match.group(1)


def cache_dir() -> Path:
    """Where the jars live: ``$LIENTHONG_CACHE`` or ``~/.cache/lienthong``, one folder per
    pom content, so a version bump fetches anew and never mixes jars."""
    base = Path(os.environ.get("LIENTHONG_CACHE", Path.home() / ".cache" / "lienthong"))
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:10]
    return base / f"kafka-{kafka_version()}-{digest}"


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    found = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if not found:
        raise KafkaUnavailable(
            "Apache Kafka needs a Java 17+ runtime: `apt-get install openjdk-17-jre-headless`"
            " (or set KAFKA_BOOTSTRAP_SERVERS to a running cluster, or LIENTHONG_BROKER=tansu"
            " for the limited embedded broker)"
        )
    return found


def ensure_jars(quiet: bool = True) -> Path:
    """The folder of broker jars, fetched with Maven the first time."""
    libs = cache_dir() / "libs"
    if (libs / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaUnavailable(
            "fetching Apache Kafka needs Maven: `apt-get install maven` (and a JDK 17+)"
        )
    java()
    libs.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libs.", dir=libs.parent))
    cmd = [
        mvn,
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise KafkaUnavailable(
            f"`{' '.join(cmd)}` failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    (tmp / ".complete").write_text(kafka_version())
    try:
        tmp.rename(libs)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return libs


def _classpath() -> str:
    return str(ensure_jars() / "*")


def tool_command(
    name: str, args: Sequence[str], bootstrap: str | None = None, config: Path | None = None
) -> list[str]:
    """The command line of one of Kafka's tools, as its shell script would build it;
    ``config`` is a client properties file (SASL), passed with the tool's own flag."""
    if name not in TOOLS:
        raise KafkaUnavailable(f"unknown tool {name!r}; one of {', '.join(sorted(TOOLS))}")
    extra: list[str] = []
    given = _has_flag(args, "--bootstrap-server") or targets_controller(args)
    if name in NEEDS_BOOTSTRAP and bootstrap and not given:
        extra = ["--bootstrap-server", bootstrap]
    flag = CONFIG_FLAG.get(name)
    if config is not None and flag and flag not in args:
        extra += [flag, str(config)]
    log_config = cache_dir() / "tools-log4j2.properties"
    if not log_config.exists():
        log_config.parent.mkdir(parents=True, exist_ok=True)
        log_config.write_text(LOG4J2.format(target="SYSTEM_ERR", level="WARN"))
    return [
        java(),
        "-Xmx256m",
        "-XX:TieredStopAtLevel=1",
        f"-Dlog4j2.configurationFile={log_config}",
        "-cp",
        _classpath(),
        TOOLS[name],
        *args,
        *extra,
    ]


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(f"{flag}=") for a in args)


def targets_controller(args: Sequence[str]) -> bool:
    """The tool is told to talk to the controller listener (``--bootstrap-controller``)."""
    return _has_flag(args, "--bootstrap-controller")


def controller_security(security: KafkaSecurity) -> KafkaSecurity:
    """The same principal on the controller listener: SASL/PLAIN with the same password
    (SCRAM cannot authenticate a KRaft controller); PLAINTEXT stays PLAINTEXT."""
    if not security.sasl:
        return security
    return KafkaSecurity(
        security.protocol, CONTROLLER_MECHANISM, security.username, security.password
    )


def run_tool(
    name: str,
    args: Sequence[str],
    bootstrap: str | None = None,
    timeout: float = 120,
    security: KafkaSecurity | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion; ``security`` (default: the environment's) becomes its
    client properties file for the run (as SASL/PLAIN with ``--bootstrap-controller``)."""
    security = security or KafkaSecurity.from_env()
    if targets_controller(args):
        security = controller_security(security)
    with client_config(security) as config:
        return subprocess.run(
            tool_command(name, args, bootstrap, config),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@contextlib.contextmanager
def client_config(security: KafkaSecurity) -> Iterator[Path | None]:
    """A private, temporary client properties file for ``security`` (None: PLAINTEXT)."""
    if security.protocol == "PLAINTEXT":
        yield None
        return
    fd, name = tempfile.mkstemp(prefix="kafka-client.", suffix=".properties")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp: readable by this user only
            f.write(security.properties())
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only (also when it existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


@dataclass(frozen=True)
class Credentials:
    """Passwords of the admin, the brokers and each service (username: password): SCRAM
    on the client listener; the admin's and the brokers' also SASL/PLAIN on the controller
    listener."""

    passwords: dict[str, str]

    @classmethod
    def generate(cls) -> Credentials:
        users = (ADMIN, BROKER, *SERVICES)
        return cls({u: secrets.token_urlsafe(24) for u in users})

    @classmethod
    def load(cls, path: Path) -> Credentials | None:
        env = read_env_file(path)
        if not env.get("KAFKA_SASL_USERNAME"):
            return None
        passwords = {env["KAFKA_SASL_USERNAME"]: env["KAFKA_SASL_PASSWORD"]}
        passwords[BROKER] = env.get("LIENTHONG_KAFKA_BROKER_PASSWORD", "")
        for s in SERVICES:
            if f"{s.upper()}_KAFKA_SASL_USERNAME" not in env:
                continue  # a data folder formatted before the service existed: `make clean`
            passwords[env[f"{s.upper()}_KAFKA_SASL_USERNAME"]] = env[
                f"{s.upper()}_KAFKA_SASL_PASSWORD"
            ]
        return cls(passwords)

    def save(self, path: Path) -> None:
        text = "".join(f"{k}={v}\n" for k, v in self.env().items())
        text += f"LIENTHONG_KAFKA_BROKER_PASSWORD={self.passwords[BROKER]}\n"
        write_private(path, "# Credentials of this local Kafka (deploy/kafka.py)\n" + text)

    def env(self) -> dict[str, str]:
        """Client settings: the admin as the shared principal, each service's own."""
        out = {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": ADMIN,
            "KAFKA_SASL_PASSWORD": self.passwords[ADMIN],
        }
        for s in SERVICES:
            if s not in self.passwords:
                continue
            out[f"{s.upper()}_KAFKA_SASL_USERNAME"] = s
            out[f"{s.upper()}_KAFKA_SASL_PASSWORD"] = self.passwords[s]
        return out

    def admin(self) -> KafkaSecurity:
        return KafkaSecurity("SASL_PLAINTEXT", MECHANISM, ADMIN, self.passwords[ADMIN])

    def scram_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create every user."""
        out = []
        for user, pw in self.passwords.items():
            out += ["--add-scram", f"{MECHANISM}=[name={user},password={pw}]"]
        return out


@dataclass
class KafkaNode:
    """One combined broker/controller process with its own log directory."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    voters: str = ""
    heap: str = "384m"
    overrides: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    credentials: Credentials | None = None  # None: PLAINTEXT, no authorizer

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    def config(self, cluster_size: int) -> dict[str, str]:
        """Tuned for one small machine: small heap and thread pools, no rebalance delay,
        internal topics replicated as far as the cluster allows."""
        rf = str(min(3, cluster_size))
        isr = "2" if cluster_size >= 3 else "1"
        return {**self._base(rf, isr), **self._security(), **self.overrides}

    def _security(self) -> dict[str, str]:
        """SASL/SCRAM on the client (and inter-broker) listener, SASL/PLAIN on the
        controller listener (the brokers' and the admin's passwords, checked against this
        JAAS configuration: SCRAM credentials are in the metadata log, which the controller
        serves), StandardAuthorizer with only the admin and the brokers as super users."""
        if self.credentials is None:
            return {}
        pw = _jaas_quote(self.credentials.passwords[BROKER])
        admin_pw = _jaas_quote(self.credentials.passwords[ADMIN])
        controller = CONTROLLER_MECHANISM.lower()
        return {
            "listeners": (
                f"SASL_PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": (
                "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
            ),
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required"
                f' username="{BROKER}" password="{pw}";'
            ),
            "sasl.mechanism.controller.protocol": CONTROLLER_MECHANISM,
            "listener.name.controller.sasl.enabled.mechanisms": CONTROLLER_MECHANISM,
            # username/password: what this node logs in with (to register, for the Raft
            # quorum); user_NAME: the passwords the controller accepts.
            f"listener.name.controller.{controller}.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required"
                f' username="{BROKER}" password="{pw}"'
                f' user_{BROKER}="{pw}" user_{ADMIN}="{admin_pw}";'
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN};User:{BROKER}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _base(self, rf: str, isr: str) -> dict[str, str]:
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "4",
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "group.initial.rebalance.delay.ms": "0",
            # Keep every record for ever: the operator console rebuilds its read models
            # from offset 0 (`python -m services.console rebuild`). Fine for a development
            # machine; a production cluster sets retention per topic (or compacts) and
            # keeps the console's rebuild within it.
            "log.retention.ms": "-1",
            "log.retention.bytes": "-1",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "unclean.leader.election.enable": "false",
        }

    def write_config(self, cluster_size: int) -> None:
        """``server.properties`` (mode 0600: it holds the passwords) and the log config,
        written anew at every start from the current credentials. The node's folder is
        this user's only (0700): its log holds every event, personal data included."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        props = "\n".join(f"{k}={v}" for k, v in self.config(cluster_size).items())
        write_private(self.config_path, props + "\n")
        (self.data_dir / "log4j2.properties").write_text(
            LOG4J2.format(target="SYSTEM_OUT", level="INFO")
        )

    def prepare(self, cluster_id: str, cluster_size: int) -> None:
        """Write the config and format the storage once (formatting keeps existing data)."""
        self.write_config(cluster_size)
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        scram = self.credentials.scram_args() if self.credentials else []
        result = run_tool(
            "storage",
            ["format", "--ignore-formatted", "-t", cluster_id, "-c", str(self.config_path), *scram],
            security=KafkaSecurity(),
        )
        if result.returncode != 0:
            raise KafkaUnavailable(f"formatting {self.data_dir} failed: {result.stderr[-2000:]}")

    def start(self) -> None:
        out = open(self.log_path, "ab")
        cmd = [
            java(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            _classpath(),
            "kafka.Kafka",
            str(self.config_path),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if not self.alive():
            self.proc = None
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class LocalKafka:
    """One node (``make run``, the test suite) or three (fault tests) on loopback.

    The cluster id and ports are kept in ``data_dir/cluster.env`` so a restart reuses the
    formatted storage and the same addresses: data survives ``make run`` restarts.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        nodes: int = 1,
        port: int | None = None,
        heap: str | None = None,
        overrides: dict[str, str] | None = None,
        secure: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.size = nodes
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.credentials = self._credentials(nodes) if secure else None
        saved = self._load()
        self.cluster_id = saved.get("cluster_id") or _cluster_id()
        ports = [int(p) for p in saved.get("ports", "").split(",") if p]
        if len(ports) != 2 * nodes or not all(port_is_free(p) for p in ports):
            first = port if port and port_is_free(port) else None
            ports = [first or free_port()] + [free_port() for _ in range(2 * nodes - 1)]
            if first and port_is_free(first + 1):
                ports[nodes] = first + 1  # the habit: controller next to its broker
        self.nodes = [
            KafkaNode(
                node_id=i + 1,
                port=ports[i],
                controller_port=ports[nodes + i],
                data_dir=data_dir / f"node{i + 1}",
                heap=heap or ("384m" if nodes > 1 else "512m"),
                overrides=dict(overrides or {}),
                credentials=self.credentials,
            )
            for i in range(nodes)
        ]
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        for n in self.nodes:
            n.voters = voters
        self._save(ports)

    @property
    def credentials_path(self) -> Path:
        return self.data_dir / "credentials.env"

    def _credentials(self, nodes: int) -> Credentials:
        """Those saved with the storage; new ones for storage not formatted yet."""
        saved = Credentials.load(self.credentials_path)
        if saved is not None:
            return saved
        formatted = [
            d
            for d in (self.data_dir / f"node{i + 1}" for i in range(nodes))
            if (d / "logs" / "meta.properties").exists()
        ]
        if formatted:
            raise KafkaUnavailable(
                f"{self.data_dir} was formatted without SCRAM credentials (before the broker"
                " had authentication): `make clean` (or remove that folder) to start afresh"
            )
        creds = Credentials.generate()
        creds.save(self.credentials_path)
        return creds

    def client_env(self) -> dict[str, str]:
        """Environment for clients: the admin as shared principal plus each service's own
        (empty when security is off)."""
        return self.credentials.env() if self.credentials else {}

    @property
    def admin(self) -> KafkaSecurity:
        """The admin principal's client settings (PLAINTEXT when security is off)."""
        return self.credentials.admin() if self.credentials else KafkaSecurity()

    def _load(self) -> dict[str, str]:
        path = self.data_dir / "cluster.env"
        if not path.exists():
            return {}
        pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return {k: v for k, v in pairs}

    def _save(self, ports: list[int]) -> None:
        (self.data_dir / "cluster.env").write_text(
            f"cluster_id={self.cluster_id}\nports={','.join(map(str, ports))}\n"
        )

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def controller_bootstrap(self) -> str:
        """The controller listeners (``--bootstrap-controller``; SASL/PLAIN when secure)."""
        return ",".join(f"127.0.0.1:{n.controller_port}" for n in self.nodes)

    def start(self, timeout: float = 90) -> str:
        """Format (first time), start every node and wait until all brokers serve."""
        for n in self.nodes:
            n.prepare(self.cluster_id, self.size)
        for n in self.nodes:
            n.start()
        self.wait_ready(timeout)
        return self.bootstrap

    def wait_ready(self, timeout: float = 90, nodes: Sequence[KafkaNode] | None = None) -> None:
        """Until every broker is registered with the controller and answers metadata."""
        import asyncio

        deadline = time.monotonic() + timeout
        want = {n.node_id for n in (nodes or self.nodes)}
        last = ""
        while time.monotonic() < deadline:
            for n in self.nodes:
                if n.proc is not None and n.proc.poll() is not None:
                    raise KafkaUnavailable(
                        f"Kafka node {n.node_id} exited with {n.proc.returncode}:\n{n.tail()}"
                    )
            if not any(_listening(n.port) for n in self.nodes):
                time.sleep(0.2)
                continue
            try:
                # in a thread of its own: the caller may be inside an event loop
                with ThreadPoolExecutor(1) as pool:
                    probe = _registered_brokers(self.bootstrap, self.admin)
                    seen = pool.submit(asyncio.run, probe).result()
                if want <= seen:
                    return
                last = f"brokers registered: {sorted(seen)}"
            except Exception as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise KafkaUnavailable(f"Kafka not ready after {timeout}s ({last})")

    def stop(self) -> None:
        """SIGTERM every node at once: stopped one by one, the last would wait for a
        controller quorum that is already gone."""
        for n in self.nodes:
            if n.alive():
                assert n.proc is not None
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            n.stop()


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


async def _registered_brokers(bootstrap: str, security: KafkaSecurity) -> set[int]:
    import logging

    from aiokafka.admin import AIOKafkaAdminClient

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="lienthong-probe",
        request_timeout_ms=3000,
        **security.kwargs(),
    )
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        return {int(b["node_id"]) for b in cluster["brokers"]}
    finally:
        await admin.close()


def _jaas_quote(value: str) -> str:
    """A JAAS option value between double quotes (generated passwords need none of it)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding; like Kafka's
    own ``Uuid.randomUuid``, never one starting with "-" (the storage tool would read it as
    an option)."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


RUN_CREDENTIALS = ROOT / ".run" / "kafka" / "credentials.env"


def dev_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for developer tools (``tool``, ``make watch``, ``make lag``): as it is
    when it says how to connect, else with ``make run``'s credentials when there are some
    and the broker is a local one (no remote cluster named)."""
    env = dict(os.environ if env is None else env)
    hosts = [h.rsplit(":", 1)[0] for h in env.get("KAFKA_BOOTSTRAP_SERVERS", "").split(",") if h]
    if security_configured(env) or any(h not in ("127.0.0.1", "localhost") for h in hosts):
        return env
    return {**read_env_file(RUN_CREDENTIALS), **env}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.kafka", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download the broker jars into the cache")
    s = sub.add_parser("start", help="run one node in the foreground")
    s.add_argument("--dir", type=Path, default=ROOT / ".run" / "kafka")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    c = sub.add_parser("cluster", help="run a three-node cluster in the foreground")
    c.add_argument("--dir", type=Path, default=ROOT / ".run" / "kafka-cluster")
    t = sub.add_parser("tool", help="run one of Kafka's tools", add_help=False)
    t.add_argument("name", choices=sorted(TOOLS))
    t.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    try:
        if a.cmd == "fetch":
            started = time.monotonic()
            libs = ensure_jars(quiet=False)
            size = sum(f.stat().st_size for f in libs.glob("*.jar"))
            print(
                f"Apache Kafka {kafka_version()}: {len(list(libs.glob('*.jar')))} jars,"
                f" {size / 2**20:.0f} MiB in {libs} ({time.monotonic() - started:.1f}s)"
            )
            return 0
        if a.cmd == "tool":
            bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{DEFAULT_PORT}")
            security = KafkaSecurity.from_env(None, dev_env())
            if targets_controller(a.args):
                security = controller_security(security)
            with client_config(security) as config:
                return subprocess.call(tool_command(a.name, a.args, bootstrap, config))
        cluster = a.cmd == "cluster"
        kafka = LocalKafka(a.dir, nodes=3 if cluster else 1, port=None if cluster else a.port)
        started = time.monotonic()
        bootstrap = kafka.start()
        took = time.monotonic() - started
        print(f"Apache Kafka {kafka_version()} on {bootstrap}, ready in {took:.1f}s ({a.dir})")
        print(f"controller listener{'s' if cluster else ''} on {kafka.controller_bootstrap}")
        if kafka.credentials:
            import asyncio

            from services.runtime.acl import provision

            env = kafka.client_env()
            asyncio.run(provision(bootstrap, os.environ.get("LIENTHONG_TOPIC_PREFIX", ""), env=env))
            print(
                "SASL on (SCRAM-SHA-512; PLAIN on the controller listener);"
                f" credentials in {kafka.credentials_path}"
            )
        try:
            while all(n.alive() for n in kafka.nodes):
                time.sleep(0.5)
            print("a node exited; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            kafka.stop()
    except KafkaUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
