#!/usr/bin/env bash
# Serves gpuconfig for a home box: web on 127.0.0.1:8000, a Celery worker and beat beside it.
# Works with what is there: Redis at REDIS_URL, else a private redis-server under var/, else an
# embedded broker (Celery's filesystem transport) and a file cache. No NVIDIA GPU: the
# simulated reference hardware of the user guide.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p var
export GPUCONFIG_VAR_DIR="${GPUCONFIG_VAR_DIR:-$PWD/var}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

redis_answers() { "$PY" -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_timeout=1).ping()" "$1" 2>/dev/null; }

if redis_answers "$REDIS_URL"; then
  echo "gpuconfig: using Redis at $REDIS_URL (broker and live progress)."
elif command -v "${GPUCONFIG_REDIS_SERVER:-redis-server}" >/dev/null; then
  port=6390
  mkdir -p var/redis
  "${GPUCONFIG_REDIS_SERVER:-redis-server}" --port "$port" --bind 127.0.0.1 --dir "$PWD/var/redis" --save "" --appendonly no \
    --daemonize no --logfile "$PWD/var/redis/redis.log" &
  pids+=($!)
  REDIS_URL="redis://127.0.0.1:$port/0"
  for _ in $(seq 50); do redis_answers "$REDIS_URL" && break; sleep 0.1; done
  echo "gpuconfig: no Redis answered; started a private redis-server on 127.0.0.1:$port (var/redis)."
else
  export GPUCONFIG_EMBEDDED=1
  echo "gpuconfig: no Redis and no redis-server binary; using the embedded broker and file cache under var/."
fi
export REDIS_URL

if [ -z "${GPUCONFIG_SIMULATED_GPUS:-}" ] && [ "${GPUCONFIG_GPU_BACKEND:-auto}" = auto ] \
   && ! command -v nvidia-smi >/dev/null && ! ldconfig -p 2>/dev/null | grep -q libnvidia-ml.so.1; then
  export GPUCONFIG_SIMULATED_GPUS="$PWD/config/examples/gpus.reference.yml"
  echo "gpuconfig: no NVIDIA GPU found; SIMULATING the reference hardware (RTX A5500 24 GB + RTX A400 4 GB)."
  echo "           from $GPUCONFIG_SIMULATED_GPUS - set GPUCONFIG_GPU_BACKEND to use real GPUs."
fi

"$PY" manage.py migrate --noinput >/dev/null
"$PY" manage.py ensure_admin
# A first-run API key for scripts, kept like the first-run password: a file only its owner reads.
"$PY" manage.py create_api_key first-run --if-none --file var/first-run-api-key
"$PY" manage.py detect_gpus || true

"$PY" -m celery -A gpuconfig_site worker --beat --loglevel INFO --concurrency 2 \
  --schedule "$GPUCONFIG_VAR_DIR/celerybeat-schedule" >var/celery.log 2>&1 &
pids+=($!)
echo "gpuconfig: Celery worker and beat running (log: var/celery.log)."
echo "gpuconfig: open http://${GPUCONFIG_BIND:-127.0.0.1:8000}/settings/gpu/"
"$PY" -m gunicorn gpuconfig_site.wsgi --bind "${GPUCONFIG_BIND:-127.0.0.1:8000}" --workers 2 --threads 4 \
  --access-logfile - --log-level warning &
pids+=($!)
wait -n "${pids[@]}"
