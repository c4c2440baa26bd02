"""The Celery application: detection scans and the apply/restart run here."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpuconfig_site.settings")

app = Celery("gpuconfig_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
