"""Ops room: running and watching gpuconfig. Health checks (``health``, shared by ``/readyz``
and ``gpuconfig check``), Prometheus metrics (``metrics``), log context and quiet access logs
(``logs``), the operational endpoints (``views``: ``/healthz``, ``/readyz``, ``/metrics``, the
API docs) and ``make run``'s process supervisor (``localrun``). The ``gpuconfig`` command and
the service units stay in ``gpuconfig_site`` (``cli``, ``deploy``) for now; the worker's
heartbeat is the site's (``gpuconfig_site.heartbeat``, started by the Celery app).
"""
