#!/usr/bin/env bash
# Serves gpuconfig for a home box: web on 127.0.0.1:8000, a Celery worker and beat beside it,
# all kept up by supervisord (a crashed process is restarted and the log says so). The first
# run writes its choices (Redis or a private redis-server or the embedded broker, the GPU
# backend, the API key file) to gpuconfig.env, which every entry point reads.
# See ops/localrun.py.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 077
exec .venv/bin/python -m ops.localrun "$@"
