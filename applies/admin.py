"""Applies room, admin: the apply runs, read-only history."""

from django.contrib import admin

from applies.models import ApplyRun
from assignments.admin import ReadOnlyAdmin


@admin.register(ApplyRun)
class ApplyRunAdmin(ReadOnlyAdmin):
    list_display = ["operation_id", "host", "status", "created_at", "finished_at", "actor"]
    list_filter = ["host", "status"]
