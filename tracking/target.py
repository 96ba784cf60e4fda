"""`TrackingTarget`: where a sweep's (or a reader's) MLflow data goes, as one value instead of a bare URI string.

A target is either a URI (`http://mlflow:5000`, `sqlite:///...`, a path) or a local SQLite store (a folder holding
`mlflow.db`, artifacts in `<store>/artifacts`) that a sweep serves with the lean loopback server while it runs
(`start` / `stop`, or `with target:`), so concurrent trials never write the SQLite file themselves. `uri` is what a
client uses now: the server's URL while this target serves its store, else the URI (a store's own `sqlite:///`
URI when nobody serves it: readers after the sweep open it directly). `client()` is the `MlflowClient` for it
(`tracking.client.mlflow_client`: the one constructor, MLflow's env set once, the one retry policy).

A target crosses a process boundary (pickled into a Ray trial) as the URI it has at that moment: the server stays
with the process that started it, and a worker never starts one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from .client import mlflow_client
from .server import LocalMlflowServer
from .store import default_tracking_dir

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0")
ENV_VAR = "MLFLOW_TRACKING_URI"


def is_loopback_host(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def is_loopback_uri(uri: str) -> bool:
    """A URI only this machine can use: a local store (sqlite:, file:, a path) or a loopback host."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file", "sqlite"):
        return True
    return is_loopback_host(parsed.hostname or "")


class TrackingTarget:
    """The tracking target of a sweep run, resolved once (`resolve`) and passed on instead of a URI string.

    URI precedence of `python -m sweeps run` (`resolve`; the first source that gives one wins):

      1. `--tracking-uri` (cli)
      2. the sweep file's `tracking_uri` (sweep_file)
      3. `$MLFLOW_TRACKING_URI` (environ)
      4. `--resume` of a sweep that served a local store: that store again (recorded_store, from the sweep's
         state file), served on loopback
      5. the default local store `./mlruns` (SQLite), served on loopback

    Sources 1-3 are used as given (a run on a Ray cluster needs one of them: the launcher refuses otherwise);
    4 and 5 are stores: `needs_server` is True and `start()` serves them on 127.0.0.1 for the run.
    """

    def __init__(self, uri: str | None = None, store: str | Path | None = None, source: str = "given"):
        if (uri is None) == (store is None):
            raise ValueError("TrackingTarget needs exactly one of uri (a tracking URI) or store (a local store folder)")
        self._uri = uri
        self.store = Path(store).expanduser().resolve() if store is not None else None
        self.source = source
        self._server: LocalMlflowServer | None = None

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def resolve(cls, *, cli: str | None = None, sweep_file: str | None = None,
                environ: Mapping[str, str] | None = None, recorded_store: str | Path | None = None,
                cwd: str | Path | None = None) -> "TrackingTarget":
        """The target by the precedence in the class docstring. `environ`: default os.environ; `cwd`: where
        the default store ./mlruns lives (default: the current directory)."""
        environ = os.environ if environ is None else environ
        for uri, source in ((cli, "--tracking-uri"), (sweep_file, "the sweep file's tracking_uri"),
                            (environ.get(ENV_VAR), ENV_VAR)):
            if uri:
                return cls(uri, source=source)
        if recorded_store:
            return cls(store=recorded_store, source="the local store the interrupted sweep served")
        return cls(store=default_tracking_dir(cwd), source="the default local store ./mlruns")

    @classmethod
    def of(cls, uri: str | None, cwd: str | Path | None = None) -> "TrackingTarget":
        """Readers (tables, figures, the demo's links): this URI, else the default local store ./mlruns, opened
        directly (no server)."""
        if uri:
            return cls(uri, source="given")
        return cls(store=default_tracking_dir(cwd), source="the default local store ./mlruns")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "TrackingTarget | None":
        """The target a sweep's state file recorded (`record()`); None when it recorded none."""
        if record.get("local_store"):
            return cls(store=record["local_store"], source="the sweep's recorded local store")
        if record.get("tracking_uri"):
            return cls(record["tracking_uri"], source="the sweep's recorded tracking URI")
        return None

    def record(self) -> dict[str, str | None]:
        """What a sweep's state file keeps: the URI that outlives this process (a store's sqlite URI, not the
        server's URL) and the store it served, if any (`from_record`, `resolve(recorded_store=...)`)."""
        return {"tracking_uri": self.backend_uri, "local_store": str(self.store) if self.store else None}

    # ------------------------------------------------------------------------------------------ the value
    @property
    def needs_server(self) -> bool:
        """A local store: a sweep serves it on loopback while its trials write (`start`)."""
        return self.store is not None

    @property
    def serving(self) -> bool:
        return self._server is not None

    @property
    def backend_uri(self) -> str:
        """The URI without any server: the given URI, or the store's `sqlite:///<store>/mlflow.db`."""
        if self.store is not None:
            return f"sqlite:///{self.store / 'mlflow.db'}"
        return self._uri  # type: ignore[return-value]  # __init__ sets exactly one of the two

    @property
    def uri(self) -> str:
        """What a client uses now: the loopback server's URL while this target serves its store, else
        `backend_uri`."""
        return self._server.url if self._server is not None else self.backend_uri

    @property
    def is_loopback(self) -> bool:
        """Only this machine reaches it (a local store, or a loopback host): trials on other nodes cannot."""
        return is_loopback_uri(self.uri)

    @property
    def artifact_location(self) -> str | None:
        """A served store's experiments keep artifacts as plain files beside it (readable without a server);
        None: the server's own default."""
        return (self.store / "artifacts").as_uri() if self.store is not None else None

    def client(self):
        """An `MlflowClient` for `uri` (tracking.client.mlflow_client)."""
        return mlflow_client(self.uri)

    # ------------------------------------------------------------------------------------------ the server
    def start(self, log_path: str | Path | None = None, timeout: float = 90.0) -> "TrackingTarget":
        """Serve the local store on loopback (a no-op for a URI target, or when already serving). Raises
        RuntimeError (with the server log's path) when the server does not become healthy."""
        if self.store is not None and self._server is None:
            self._server = LocalMlflowServer(self.store, log_path=log_path).start(timeout=timeout)
        return self

    def stop(self) -> None:
        """Stop the server `start` started (idempotent); `uri` is the store's sqlite URI again."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> "TrackingTarget":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ value semantics
    def __reduce__(self):
        """Pickled as the URI it has now (a served store: its server's URL): the server stays here."""
        return (TrackingTarget, (self.uri, None, self.source))

    def __eq__(self, other: object) -> bool:   # not hashable: `uri` changes while it serves
        return isinstance(other, TrackingTarget) and (self.uri, self.store) == (other.uri, other.store)

    def __repr__(self) -> str:
        where = f"store={str(self.store)!r}" if self.store is not None else f"uri={self._uri!r}"
        return f"TrackingTarget({where}, source={self.source!r}{', serving at ' + self.uri if self.serving else ''})"

    def __str__(self) -> str:
        return self.uri
