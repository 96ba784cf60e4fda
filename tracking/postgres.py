"""A throwaway PostgreSQL cluster in a folder, on 127.0.0.1, with a generated password: the store of a long-lived
MLflow server (`platform/local/up --store postgres`, `python -m tracking postgres start DIR`) and of the tests.

    pg = LocalPostgres(folder).start()      # initdb (first time) + pg_ctl start; pg.uri: postgresql://mlflow:...
    LocalMlflowServer(folder, backend_uri=pg.uri, workers=4).start()
    pg.stop()                               # pg_ctl stop; pg.stop(remove=True) also deletes the cluster

Layout of `folder`: `password` (0600), `uri` (0600, the SQLAlchemy URI), `port`, and `data` (the cluster;
`postgres.log` beside it). PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user and lives
in a private folder under /tmp (`folder/data` links to it), because `folder` may sit where that user cannot go
(pytest's tmp_path is 0700). The server listens on 127.0.0.1 only (no Unix socket), password auth (scram-sha-256).
The binaries are Debian's `postgresql` package (/usr/lib/postgresql/<version>/bin) or $PG_BIN; missing ones raise
`PostgresMissing` with the install command. MLflow's `postgresql://` URIs need the psycopg 3 driver
(`psycopg[binary]`, in pyproject.toml).
"""
from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from .server import _free_port

INSTALL_HINT = "sudo apt-get install -y postgresql   (Debian/Ubuntu; or set PG_BIN to the folder holding initdb)"
DB_USER = DB_NAME = "mlflow"
SYSTEM_USER = "postgres"


class PostgresMissing(RuntimeError):
    """PostgreSQL's server binaries or the psycopg driver are not installed."""


def pg_bin_dir() -> Path:
    """The folder holding initdb and pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    if os.environ.get("PG_BIN"):     # chosen explicitly: it must be right
        chosen = Path(os.environ["PG_BIN"])
        if (chosen / "initdb").is_file() and (chosen / "pg_ctl").is_file():
            return chosen
        raise PostgresMissing(f"PG_BIN={chosen} holds no initdb/pg_ctl: point it at PostgreSQL's bin folder "
                              f"(e.g. /usr/lib/postgresql/15/bin), or unset it, or install with `{INSTALL_HINT}`")
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0, reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for c in candidates:
        if (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    raise PostgresMissing(f"PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
                          f"or on PATH: install them with `{INSTALL_HINT}`")


def require_psycopg() -> None:
    if importlib.util.find_spec("psycopg") is None:
        raise PostgresMissing("MLflow's postgresql:// store needs the psycopg 3 driver, which is not installed: "
                              "`pip install -c constraints.txt 'psycopg[binary]'` (or `make setup`)")


def _reachable(folder: Path, uid: int, gid: int) -> bool:
    """Whether user `uid` (group `gid`) can traverse every folder down to `folder`."""
    for p in [folder, *folder.parents]:
        st = p.stat()
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return False
    return True


class LocalPostgres:
    """One PostgreSQL cluster in `folder` on 127.0.0.1:`port`, database and user `mlflow`, generated password."""

    def __init__(self, folder: str | Path, port: int | None = None, max_connections: int = 400):
        self.folder = Path(folder).resolve()
        saved_port = self.folder / "port"
        self.port = port or (int(saved_port.read_text()) if saved_port.is_file() else _free_port())
        self.max_connections = max_connections
        self.bin = pg_bin_dir()
        self._as_root = os.geteuid() == 0

    # ---- files
    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def password(self) -> str:
        return (self.folder / "password").read_text().strip()

    @property
    def uri(self) -> str:
        return f"postgresql://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def log_path(self) -> Path:
        """Beside the cluster (as root that is the `postgres` user's private folder, `folder/data` links to it)."""
        return self.data_dir.resolve().parent / "postgres.log"

    def _write_private(self, name: str, text: str) -> None:
        path = self.folder / name
        path.touch(mode=0o600, exist_ok=True)
        os.chmod(path, 0o600)
        path.write_text(text)

    # ---- commands
    def _run(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
        """Run a server command, as the `postgres` system user when this process is root."""
        cmd = (["runuser", "-u", SYSTEM_USER, "--"] if self._as_root else []) + args
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd="/")
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}; log: {self.log_path}")
        return proc.stdout

    def _init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_private("password", secrets.token_urlsafe(24))
        (self.folder / "port").write_text(str(self.port))
        if self._as_root:
            # PostgreSQL refuses root: the cluster belongs to `postgres`, in a folder that user can reach
            uid, gid = pwd.getpwnam(SYSTEM_USER)[2:4]
            if _reachable(self.folder, uid, gid):
                home = self.folder / "cluster"
                home.mkdir(mode=0o700)
            else:     # e.g. under pytest's 0700 tmp folder: a private folder under /tmp, linked from here
                home = Path(tempfile.mkdtemp(prefix="sgf-pg-"))
            os.chown(home, uid, gid)
            self.data_dir.symlink_to(home / "data")
        else:
            home = self.folder
        pwfile = home / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            os.chown(pwfile, uid, gid)
        os.chmod(pwfile, 0o600)
        try:
            self._run([str(self.bin / "initdb"), "-D", str(home / "data"), "-U", DB_USER, "--pwfile", str(pwfile),
                       "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
        finally:
            pwfile.unlink(missing_ok=True)

    def running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        proc = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True, timeout=30)
        return proc.returncode == 0

    def start(self, timeout: int = 60) -> "LocalPostgres":
        """initdb on first use, start the server, create the `mlflow` database. Idempotent."""
        require_psycopg()
        if not (self.data_dir / "PG_VERSION").exists():
            if self.data_dir.exists() or self.data_dir.is_symlink():
                raise RuntimeError(f"{self.data_dir} exists but holds no PostgreSQL cluster: remove it (or choose "
                                   f"another folder) and start again")
            self._init()
        log = self.log_path
        if not self.running():
            opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
                    f"-c max_connections={self.max_connections}")
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data_dir.resolve()), "-l", str(log), "-w",
                       "-t", str(timeout), "-o", opts, "start"], timeout=timeout + 30)
        env = dict(os.environ, PGPASSWORD=self.password)
        exists = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER,
                                 "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname='{DB_NAME}'"],
                                capture_output=True, text=True, env=env, timeout=60)
        if exists.returncode != 0:
            raise RuntimeError(f"PostgreSQL on 127.0.0.1:{self.port} does not answer: {exists.stderr.strip()}; "
                               f"log: {log}")
        if exists.stdout.strip() != "1":
            subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER,
                            DB_NAME], check=True, env=env, timeout=60, capture_output=True)
        self._write_private("uri", self.uri + "\n")
        return self

    def stop(self, remove: bool = False) -> None:
        """Stop the server (fast shutdown); `remove`: also delete the cluster and this folder's files."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data_dir.resolve()), "-m", "fast", "-w", "stop"])
        if remove:
            target = self.data_dir.resolve() if self.data_dir.is_symlink() else None
            if target is not None:
                if not target.parent.is_relative_to(self.folder):
                    shutil.rmtree(target.parent, ignore_errors=True)
                self.data_dir.unlink()
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(remove=True)
