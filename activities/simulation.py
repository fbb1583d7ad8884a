"""Running a policy simulation job: batches of invoices through the simulation engine, each
batch's rows and the progress written in one transaction, a heartbeat after each
(``arflow.policies.simulation_jobs``). A synchronous activity: the simulation is CPU work,
run on the worker's activity threads."""

from __future__ import annotations

from temporalio import activity

from activities.failures import not_found_is_final
from arflow.db import SessionFactory
from arflow.policies import simulation_jobs
from workflows.simulation_job import FAIL, SIMULATE


class SimulationActivities:
    def __init__(self, sessions: SessionFactory, batch: int = simulation_jobs.BATCH) -> None:
        self.sessions = sessions
        self.batch = batch

    @activity.defn(name=SIMULATE)
    def run_simulation_job(self, job_id: int) -> None:
        """Simulate the job's invoices that have no row yet, then store the totals."""
        with self.sessions() as session, not_found_is_final():
            plan = simulation_jobs.begin(session, job_id)
        with self.sessions() as session:
            batches = simulation_jobs.batches(session, plan.pending, self.batch)
        activity.heartbeat(plan.total - len(plan.pending))  # invoices done: a retry's start
        for ids in batches:
            with self.sessions() as session:
                done = simulation_jobs.run_batch(session, plan, ids)
            activity.heartbeat(done)
        with self.sessions() as session:
            simulation_jobs.finish(session, job_id)

    @activity.defn(name=FAIL)
    def fail_simulation_job(self, job_id: int, reason: str) -> None:
        """Every attempt failed: record the job as failed with the reason."""
        with self.sessions() as session, not_found_is_final():
            simulation_jobs.fail(session, job_id, reason)

    def all(self) -> list[object]:
        return [self.run_simulation_job, self.fail_simulation_job]
