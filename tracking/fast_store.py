"""The tracking server's metric writes in bulk: MLflow's SQL store with `log_batch`'s metric insert done as one
executemany per table instead of one ORM object per point (issue 19: the server spent ~0.5 ms of CPU per point,
most of it in SQLAlchemy's unit of work, so 256 trials at 10 steps/s needed ~5 cores of server).

Same rows, same semantics as MLflow 3's `SqlAlchemyStore._log_metrics_once` (tests/test_tracking_fast_store.py
compares both stores' tables after the same calls):
- every metric validated by MLflow's own `_validate_metric`; exact duplicates within a batch written once;
- NaN stored as 0 with is_nan, +-inf as +-max float (MLflow's `sanitize_metric_value`);
- `latest_metrics` keeps, per key, the greatest (step, timestamp, value), the first of equal ones; the existing
  rows of the batch's keys are read FOR UPDATE (PostgreSQL) in key order, as MLflow does against deadlocks;
- a batch that collides with rows already stored (a re-sent batch) rolls back and goes through MLflow's own
  method, which inserts only the missing points: a re-send never duplicates and never fails.

Served by the project's servers only: MLflow loads this module through the `mlflow.tracking_store` entry points
for `sqlite` and `postgresql` (pyproject.toml), and `build_store` returns it when the server's environment sets
FAST_METRICS_ENV (tracking.server does); anywhere else it returns MLflow's own store, untouched. Imports MLflow
lazily: MLflow loads entry points while it is itself being imported.
"""
from __future__ import annotations

import functools
import os
import sys

FAST_METRICS_ENV = "SGF_FAST_METRICS"


def enabled() -> bool:
    return os.environ.get(FAST_METRICS_ENV, "") == "1"


def build_store(store_uri: str, artifact_uri: str | None = None):
    """MLflow's tracking-store builder for SQL URIs; the bulk-metric store when FAST_METRICS_ENV is on (and
    MLflow's workspaces are off: that store is another class)."""
    # late: MLflow loads this module (an entry point) while importing itself
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store

    store = _get_sqlalchemy_store(store_uri, artifact_uri)     # MLflow's own store and choices of artifact root
    if enabled() and not MLFLOW_ENABLE_WORKSPACES.get():
        store.__class__ = _bulk_class(type(store))
        _announce()
    return store


@functools.cache
def _announce() -> None:
    """Once per server worker, in the server's log."""
    print(f"tracking.fast_store: bulk metric writes ({FAST_METRICS_ENV}=1)", file=sys.stderr, flush=True)


@functools.cache
def _bulk_class(base: type) -> type:
    return type(f"BulkMetrics{base.__name__}", (BulkMetricsMixin, base), {})


class BulkMetricsMixin:
    """Overrides `log_batch` and `_log_metrics_once` of MLflow's SqlAlchemyStore (see the module docstring)."""

    def log_batch(self, run_id, metrics, params, tags):
        """A batch of metrics alone (what a spool sends while a trial runs) in one session: MLflow's log_batch
        opens one to check the run and another in `_log_metrics`, which checks it again (on SQLite each
        session also sets three PRAGMAs). The same validations, in MLflow's order; anything else is MLflow's."""
        if params or tags or not metrics or any(getattr(m, "model_id", None) for m in metrics):
            return super().log_batch(run_id, metrics, params, tags)
        # late: MLflow loads this module (an entry point) while importing itself
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
        from mlflow.utils.validation import (_validate_batch_log_data, _validate_batch_log_limits,
                                             _validate_run_id)

        _validate_run_id(run_id)
        metrics, params, tags = _validate_batch_log_data(metrics, params, tags)   # validates every metric
        _validate_batch_log_limits(metrics, params, tags)
        try:
            self._run_with_deadlock_retry(self._insert_metrics, run_id, metrics)  # checks the run is active
        except MlflowException:
            raise
        except Exception as e:
            raise MlflowException(e, INTERNAL_ERROR)

    def _log_metrics_once(self, run_id, metrics):
        # late: MLflow loads this module (an entry point) while importing itself
        from mlflow.utils.validation import _validate_metric

        single = len(metrics) == 1
        for idx, metric in enumerate(metrics):
            _validate_metric(metric.key, metric.value, metric.timestamp, metric.step,
                             path="" if single else f"metrics[{idx}]")
        self._insert_metrics(run_id, metrics)

    def _insert_metrics(self, run_id, metrics):
        """Validated metrics of one run, in bulk (MLflow's own method when some are stored already)."""
        # late: MLflow loads this module (an entry point) while importing itself
        import sqlalchemy
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

        rows, seen = [], set()
        for metric in metrics:
            if metric in seen:
                continue
            seen.add(metric)
            is_nan, value = self.sanitize_metric_value(metric.value)
            rows.append({"run_uuid": run_id, "key": metric.key, "value": value, "timestamp": metric.timestamp,
                         "step": metric.step, "is_nan": is_nan})
        if not rows:
            return
        newest: dict[str, dict] = {}
        for row in rows:                              # the batch's latest per key: greatest (step, timestamp, value)
            best = newest.get(row["key"])
            if best is None or _order(row) > _order(best):
                newest[row["key"]] = row
        with self.ManagedSessionMaker(read_only=False) as session:
            self._check_active(session, run_id)
            try:
                session.execute(sqlalchemy.insert(SqlMetric.__table__), rows)     # Core: no ORM bulk machinery
                _merge_latest(session, SqlLatestMetric, run_id, newest)
                session.commit()
                return
            except sqlalchemy.exc.IntegrityError:     # inside: the session maker wraps what leaves it
                session.rollback()
        # some points are stored already (a re-sent batch): MLflow's own path inserts only the others
        super()._log_metrics_once(run_id, metrics)

    def _check_active(self, session, run_id) -> None:
        """The run exists and is active: one column read; any other case raises MLflow's own error."""
        # late: MLflow loads this module (an entry point) while importing itself
        import sqlalchemy
        from mlflow.entities.lifecycle_stage import LifecycleStage
        from mlflow.store.tracking.dbmodels.models import SqlRun

        stages = session.execute(sqlalchemy.select(SqlRun.__table__.c.lifecycle_stage)
                                 .where(SqlRun.__table__.c.run_uuid == run_id)).scalars().all()
        if stages != [LifecycleStage.ACTIVE]:
            self._check_run_is_active(self._get_run(run_uuid=run_id, session=session))


def _order(row: dict) -> tuple:
    return (row["step"], row["timestamp"], row["value"])


def _merge_latest(session, table, run_id: str, newest: dict[str, dict]) -> None:
    """latest_metrics: insert the keys the run does not have, update those the batch makes newer."""
    # late: MLflow loads this module (an entry point) while importing itself
    import sqlalchemy

    keys = sorted(newest)
    existing: dict[str, tuple] = {}
    for i in range(0, len(keys), 500):                # as MLflow: bounded IN lists, rows locked in key order
        query = (sqlalchemy.select(table.key, table.step, table.timestamp, table.value)
                 .where(table.run_uuid == run_id, table.key.in_(keys[i:i + 500]))
                 .order_by(table.run_uuid, table.key).with_for_update())
        existing.update({k: (s, t, v) for k, s, t, v in session.execute(query)})
    inserts = [newest[k] for k in keys if k not in existing]
    updates = [newest[k] for k in keys if k in existing and _order(newest[k]) > existing[k]]
    if inserts:
        session.execute(sqlalchemy.insert(table.__table__), inserts)
    if updates:
        stmt = (sqlalchemy.update(table.__table__)
                .where(table.__table__.c.run_uuid == sqlalchemy.bindparam("b_run"),
                       table.__table__.c.key == sqlalchemy.bindparam("b_key"))
                .values(value=sqlalchemy.bindparam("b_value"), step=sqlalchemy.bindparam("b_step"),
                        timestamp=sqlalchemy.bindparam("b_timestamp"), is_nan=sqlalchemy.bindparam("b_is_nan")))
        session.connection().execute(stmt, [{"b_run": run_id, "b_key": r["key"], "b_value": r["value"],
                                             "b_step": r["step"], "b_timestamp": r["timestamp"],
                                             "b_is_nan": r["is_nan"]} for r in updates])
