"""Deleting an experiment: its rows and every artefact it left in the blob store.

A queued or running experiment is refused (409 `experiment_active`: cancel it first), and so is a
cancelled one whose worker has not yet stopped its stage (it could still write an artefact after the
delete). Rows go in one transaction; the blobs (under `experiments/<tenant>/<id>/`, every attempt's, owned
by this experiment alone) are removed after the commit, so a failed commit never leaves rows pointing at
missing files. The calibration points it gave go with it; calibrations already fitted stay as history.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import Conflict
from app.core.storage import BlobStore
from app.core.vocab import ACTIVE
from app.experiments.service import get
from app.models import CalibrationPoint, Comparison, Event, Experiment, ExperimentStage

log = logging.getLogger("ftguard.experiments")


def artefact_prefix(tenant_id: str, experiment_id: str) -> str:
    return f"experiments/{tenant_id}/{experiment_id}"


def _active(message: str) -> Conflict:
    """The refusal to delete an experiment that has not stopped yet."""
    return Conflict(message, param="experiment_id", code="experiment_active")


def delete(*, session: Session, store: BlobStore, tenant_id: str, experiment_id: str) -> int:
    """Delete a finished experiment and its artefacts; returns how many blobs were removed."""
    exp = get(session=session, tenant_id=tenant_id, experiment_id=experiment_id)
    if exp.status in ACTIVE:
        raise _active(f"the experiment is {exp.status}; cancel it first")
    stopping = session.scalar(
        select(ExperimentStage.name)
        .where(ExperimentStage.experiment_id == exp.id, ExperimentStage.status == "running")
        .limit(1)
    )
    if stopping is not None:
        raise _active(f"stage {stopping} is still stopping after the cancellation; retry in a moment")
    session.execute(sql_delete(CalibrationPoint).where(CalibrationPoint.experiment_id == exp.id))
    session.execute(sql_delete(ExperimentStage).where(ExperimentStage.experiment_id == exp.id))
    session.execute(sql_delete(Event).where(Event.tenant_id == tenant_id, Event.object_id == exp.id))
    cmp_id = exp.comparison_id
    session.delete(exp)
    session.flush()
    if (
        cmp_id
        and session.scalar(select(Experiment.id).where(Experiment.comparison_id == cmp_id).limit(1)) is None
    ):
        session.execute(
            sql_delete(Comparison).where(Comparison.id == cmp_id, Comparison.tenant_id == tenant_id)
        )
    session.commit()
    removed = 0
    for key in store.list(artefact_prefix(tenant_id, exp.id)):
        try:
            store.delete(key)
            removed += 1
        except OSError:  # left for the operator; the rows are gone, nothing points at it
            log.warning("could not remove artefact %s", key, exc_info=True)
    return removed
