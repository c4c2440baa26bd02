"""Assignments room, background work: the generated files follow the saved configuration
again (periodic under beat). The apply's tasks are in ``applies.tasks``."""

from celery import shared_task

from assignments.services import config_files_sync


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def config_files_sync_task() -> None:
    """Periodic under beat: the generated files follow the database again after a crash
    between a save's commit and its rename, or a folder that was unwritable for a while."""
    config_files_sync()
