"""What ``make run`` writes under .run is readable by its user only: the tokens (the
operator's included), where.env and the services' PostgreSQL credentials."""

from __future__ import annotations

import stat
from pathlib import Path

from deploy import dev
from deploy.kafka import write_private
from deploy.local import (
    SERVICES,
    harden_pgdata,
    service_env,
    stored_database_passwords,
    write_database_credentials,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_files_are_private_also_when_an_older_run_left_them_open(tmp_path: Path) -> None:
    old = tmp_path / "operator-token"
    old.write_text("old")
    old.chmod(0o644)  # as `make run` wrote it before
    paths = dev.write_tokens(tmp_path, {"operator": "tok-1", "desk": "tok-2"})
    assert {p.name for p in paths} == {"operator-token", "desk-token"}
    for path in paths:
        assert mode(path) == 0o600, path
    assert old.read_text() == "tok-1"


def test_where_env_is_written_private(tmp_path: Path) -> None:
    path = tmp_path / "where.env"
    path.write_text("x")
    path.chmod(0o666)
    write_private(path, "DATABASE_URL=postgresql://admin:secret@db/x\n")
    assert mode(path) == 0o600


def test_database_passwords_are_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "pg-credentials.env"
    first = stored_database_passwords(path)
    assert set(first) == set(SERVICES) and len(set(first.values())) == len(SERVICES)
    assert mode(path) == 0o600
    urls = {s: f"postgresql://lienthong_{s}:{pw}@/db" for s, pw in first.items()}
    write_database_credentials(path, first, urls)
    assert stored_database_passwords(path) == first  # the next run: the same passwords
    text = path.read_text()
    assert "INTAKE_DATABASE_URL=postgresql://lienthong_intake:" in text
    assert mode(path) == 0o600


def test_a_service_gets_its_own_dsn_only(monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres:admin@db/x")
    monkeypatch.setenv("ROUTING_DATABASE_URL", "postgresql://lienthong_routing:r@db/x")
    monkeypatch.setenv("LIENTHONG_DATABASE_URL", "postgresql://postgres:admin@db/x")
    env = service_env(
        "intake", port=1, bootstrap="b:1", database_url="postgresql://lienthong_intake:i@db/x"
    )
    assert env["DATABASE_URL"] == "postgresql://lienthong_intake:i@db/x"
    assert not [k for k in env if k.endswith("DATABASE_URL") and k != "DATABASE_URL"]
    assert "postgresql://postgres:admin@db/x" not in env.values()


def test_the_embedded_servers_files_say_no_trust(tmp_path: Path) -> None:
    """What ``harden_pgdata`` writes over the wheel's ``initdb --auth=trust`` (and again
    over its own block, not twice)."""
    (tmp_path / "postgresql.conf").write_text("#unix_socket_permissions = 0777\n")
    (tmp_path / "pg_hba.conf").write_text("local all all trust\nhost all all 0.0.0.0/0 trust\n")
    (tmp_path / "pg_ident.conf").write_text("")
    harden_pgdata(tmp_path)
    harden_pgdata(tmp_path)
    conf = (tmp_path / "postgresql.conf").read_text()
    assert conf.count("unix_socket_permissions = 0700") == 1
    rules = [
        line.split()
        for line in (tmp_path / "pg_hba.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0][:4] == ["local", "all", "postgres", "peer"]
    assert all(r[-1] == "scram-sha-256" for r in rules[1:])
    assert not any("trust" in r for r in rules)


def test_simulator_journals_are_private(tmp_path: Path) -> None:
    """What the simulators were sent (applicants' phone numbers) is this user's only."""
    from deploy.simulators.common import Journal

    path = tmp_path / "sms-sim.jsonl"
    path.write_text("")
    path.chmod(0o644)  # as an older run left it
    Journal(path).append({"to": "0912345678"})
    assert mode(path) == 0o600


def test_the_smtp_sinks_mail_folder_is_private(tmp_path: Path) -> None:
    """The emails `make run` keeps carry lookup codes."""
    import smtplib

    from deploy.local import SmtpSink

    sink = SmtpSink(folder=tmp_path / "mail")
    sink.start()
    try:
        with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
            smtp.sendmail("a@b.vn", ["c@d.vn"], "Subject: x\r\n\r\nMã tra cứu".encode())
    finally:
        sink.stop()
    assert mode(tmp_path / "mail") == 0o700
