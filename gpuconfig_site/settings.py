"""Settings for gpuconfig: one file, driven by ``gpuconfig.env`` and the environment.

Every knob gpuconfig adds is named ``GPUCONFIG_*`` and documented in the README. Every entry
point (web, worker, beat, ``manage.py``, the ``gpuconfig`` command, the service units) imports
this module, so all of them read the same configuration file first; a variable set in the
environment wins over the file. Nothing here talks to the network; ``make run`` decides
whether Redis answers and records that choice in the file before Django starts.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import dj_database_url
import django
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv
from kombu import Queue as _Queue

from fleet import routing as _routing

BASE_DIR = Path(__file__).resolve().parent.parent

# --- The one configuration file (environment wins) and the private var/ folder ---------------
GPUCONFIG_ENV_FILE = Path(os.environ.get("GPUCONFIG_ENV_FILE") or BASE_DIR / "gpuconfig.env")
load_dotenv(GPUCONFIG_ENV_FILE, override=False)
VAR_DIR = Path(os.environ.get("GPUCONFIG_VAR_DIR") or BASE_DIR / "var")


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    """An integer from the environment; a value that is not one names the variable."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_float(name: str, default: float) -> float:
    """A number from the environment; a value that is not one names the variable."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = float(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from exc
    if number != number or number in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name} must be a finite number, got {value!r}")
    return number


def env_list(name: str, default: str = "") -> list[str]:
    """A comma-separated list from the environment, blanks dropped."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_choice(name: str, default: str, choices: set[str]) -> str:
    """One of ``choices`` (case-insensitive); anything else names the variable and the choices."""
    value = (os.environ.get(name) or default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(
            f"{name} must be one of {', '.join(sorted(choices))}, got {value!r}"
        )
    return value


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    # A per-installation key kept under var/, so sessions survive restarts without a default
    # key ever being shared between installations.
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    # The first start of an installation writes it: this is the one write settings make, since
    # Django needs the key before any app loads. O_EXCL: a web process and a worker starting
    # together agree on one key (the loser reads the winner's).
    from django.core.management.utils import get_random_secret_key

    VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = get_random_secret_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def _api_key() -> str | None:
    """``GPUCONFIG_API_KEY``, else the content of ``GPUCONFIG_API_KEY_FILE``; unset: no key auth.

    A key that is set but blank would accept a blank header, so it refuses to start instead.
    """
    key = os.environ.get("GPUCONFIG_API_KEY")
    source = "GPUCONFIG_API_KEY"
    key_file = os.environ.get("GPUCONFIG_API_KEY_FILE")
    if key is None and key_file:
        source = f"GPUCONFIG_API_KEY_FILE ({key_file})"
        try:
            key = Path(key_file).read_text()
        except OSError as exc:
            raise ImproperlyConfigured(f"{source} cannot be read: {exc.strerror}") from exc
    if key is None:
        return None
    if not key.strip():
        raise ImproperlyConfigured(
            f"{source} is set but blank: set a real key (e.g. `openssl rand -hex 32`) or unset it"
        )
    return key.strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
# Django's test runner adds "testserver" for tests; it is not a host a real request may name.
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "rest_framework_api_key",
    "django_htmx",
    "axes",
    "gpus",
    "assignments",
    "applies",
    "front",
    "apikeys",
    "fleet",
    "gpuconfig_site.apps.SiteConfig",
]
if django.VERSION < (6, 0):
    # Template partials ({% partialdef %}) are built into Django 6; on 5.2 the package adds them.
    INSTALLED_APPS.append("template_partials")

MIDDLEWARE = [
    # A GET's parts (the lockout check, the kept reads, the page's fragments) share one fetch
    # from Redis (gpuconfig_site.read_memo).
    "gpuconfig_site.read_memo.SharedReadsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # ?host=<name>: the GPU host the request works on (404 unknown, 503 offline for actions).
    "fleet.middleware.HostMiddleware",
    "gpuconfig_site.api.ApiErrorMiddleware",
    # Last, as django-axes asks: it turns a lockout flagged during the request into a 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "gpuconfig_site.urls"
WSGI_APPLICATION = "gpuconfig_site.wsgi.application"
ASGI_APPLICATION = "gpuconfig_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "gpus.context_processors.detection_mode",
                "gpuconfig_site.redis_health.redis_banner",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'gpuconfig.sqlite3'}",
        # Connections are kept between requests (and checked before reuse): opening one per
        # request is a large part of a cheap read's cost.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL and a busy timeout let the web process and the Celery worker share the file; IMMEDIATE
    # transactions take the write lock when they begin, so concurrent writers queue for it
    # (busy timeout) instead of failing with "database is locked" when a read turns into a write.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
        }
    )
    # The test database is a file too, so a real Celery worker started by a test can open it.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get(
            "GPUCONFIG_TEST_SQLITE", str(VAR_DIR / f"test-gpuconfig-{os.getpid()}.sqlite3")
        )
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses a locked-out client before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "settings-gpu"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TZ", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = os.environ.get("GPUCONFIG_STATIC_ROOT") or None  # only for `collectstatic`
# Static files are served by the app itself (WhiteNoise) straight from the source folders:
# a home box runs no separate web server and needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Redis: the Celery broker and the live progress store (through Django's cache API) -------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
GPUCONFIG_EMBEDDED = env_bool("GPUCONFIG_EMBEDDED", False)
GPUCONFIG_REDIS_TIMEOUT = env_float("GPUCONFIG_REDIS_TIMEOUT", 2.0)

if GPUCONFIG_EMBEDDED:
    # No Redis answered: `make run` falls back to a file cache and Celery's filesystem transport.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "gpuconfig_site.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("GPUCONFIG_CACHE_PREFIX", "gpuconfig"),
            # A Redis that stops answering fails a request in seconds instead of hanging it:
            # readiness and request handlers must answer while Redis is down.
            "OPTIONS": {
                "socket_connect_timeout": GPUCONFIG_REDIS_TIMEOUT,
                "socket_timeout": GPUCONFIG_REDIS_TIMEOUT,
            },
        }
    }
    # A fleet's broker (RabbitMQ: it tells the centre which agent published a message); a
    # single box uses its Redis.
    CELERY_BROKER_URL = os.environ.get("GPUCONFIG_BROKER_URL") or REDIS_URL
    # kombu's Redis transport with one fix: a worker survives a Redis restart while it holds an
    # unacknowledged message (see gpuconfig_site/broker.py).
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        CELERY_BROKER_TRANSPORT = "gpuconfig_site.broker:RedisTransport"

CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("GPUCONFIG_TASK_TIME_LIMIT", 3600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("GPUCONFIG_TASK_SOFT_TIME_LIMIT", 3300)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- gpuconfig -------------------------------------------------------------------------------
GPUCONFIG_GPU_BACKEND = os.environ.get("GPUCONFIG_GPU_BACKEND", "auto")
GPUCONFIG_SIMULATED_GPUS = os.environ.get("GPUCONFIG_SIMULATED_GPUS") or None
GPUCONFIG_CONFIG_DIR = Path(os.environ.get("GPUCONFIG_CONFIG_DIR", BASE_DIR / "config"))
GPUCONFIG_API_KEY = _api_key()
GPUCONFIG_COMPOSE_PROJECT = os.environ.get("GPUCONFIG_COMPOSE_PROJECT") or None
GPUCONFIG_SCAN_INTERVAL = env_int("GPUCONFIG_SCAN_INTERVAL", 30)
GPUCONFIG_HEALTH_TIMEOUT = env_int("GPUCONFIG_HEALTH_TIMEOUT", 180)
GPUCONFIG_DEVICE_ID_FORMAT = os.environ.get("GPUCONFIG_DEVICE_ID_FORMAT", "index")
GPUCONFIG_CONTAINER_RUNTIME = os.environ.get("GPUCONFIG_CONTAINER_RUNTIME", "auto")
GPUCONFIG_SAMPLE_RETENTION = env_int("GPUCONFIG_SAMPLE_RETENTION", 3600)  # seconds of samples kept
# A running apply refreshes its heartbeat; one silent this long is dead and gets recovered
# (sooner when its worker is seen gone on this host).
GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT = env_int("GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT", 15)
GPUCONFIG_HEALTH_GRACE = env_float("GPUCONFIG_HEALTH_GRACE", 3.0)
# Seconds each step of a "Simulated containers" recreate takes (so its progress can be watched).
GPUCONFIG_SIMULATED_RUNTIME_STEP = env_float("GPUCONFIG_SIMULATED_RUNTIME_STEP", 0.6)
# The user's base compose file(s), comma-separated, and the compose tool that runs them.
GPUCONFIG_COMPOSE_FILE = os.environ.get("GPUCONFIG_COMPOSE_FILE") or None
GPUCONFIG_COMPOSE_TOOL = os.environ.get("GPUCONFIG_COMPOSE_TOOL", "auto")
GPUCONFIG_COMPOSE_TIMEOUT = env_float("GPUCONFIG_COMPOSE_TIMEOUT", 30.0)
GPUCONFIG_NVIDIA_SMI_TIMEOUT = env_float("GPUCONFIG_NVIDIA_SMI_TIMEOUT", 10.0)
GPUCONFIG_DETECT_WAIT = env_float("GPUCONFIG_DETECT_WAIT", 5.0)

# Measured VRAM: NVML's processes mapped to containers through <proc root>/<pid>/cgroup (the
# host's /proc: `pid: host` in a container, or the host's /proc mounted and named here), kept
# per service for a window, and planned with (p95 x (1 + margin)) once enough samples exist.
GPUCONFIG_PROC_ROOT = os.environ.get("GPUCONFIG_PROC_ROOT") or "/proc"
GPUCONFIG_VRAM_WINDOW = env_int("GPUCONFIG_VRAM_WINDOW", 24 * 3600)  # seconds
GPUCONFIG_VRAM_MARGIN = env_float("GPUCONFIG_VRAM_MARGIN", 0.10)
GPUCONFIG_VRAM_MIN_SAMPLES = env_int("GPUCONFIG_VRAM_MIN_SAMPLES", 10)

# Moves without downtime: seconds the old copy of a service moved make-before-break keeps
# running, off its network aliases, before it is stopped (requests in flight finish).
GPUCONFIG_DRAIN_S = env_float("GPUCONFIG_DRAIN_S", 5.0)

# Periodic repair: interrupted applies are recovered, and the generated files are rewritten
# from the database when they differ.
GPUCONFIG_RECOVERY_INTERVAL = env_int("GPUCONFIG_RECOVERY_INTERVAL", 30)
# The worker looks this often (seconds) whether an apply needs repair (a dead run, or a restore
# the engine's absence left undone) and repairs it as soon as the engine answers again, without
# waiting for beat's next recovery tick. No broker message is held for it.
GPUCONFIG_RECOVERY_WATCH_INTERVAL = env_float("GPUCONFIG_RECOVERY_WATCH_INTERVAL", 2.0)


# --- The fleet: this machine's host, its role, its heartbeat -----------------------------------
def _host_name() -> str:
    """``GPUCONFIG_HOST_NAME``, else this machine's hostname made into a host name (its first
    label, lower-case, other characters as dashes)."""
    explicit = os.environ.get("GPUCONFIG_HOST_NAME")
    if explicit is not None and explicit.strip():
        name = explicit.strip()
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
            raise ImproperlyConfigured(
                "GPUCONFIG_HOST_NAME must be lower-case letters, digits and dashes "
                f"(at most 63), got {name!r}"
            )
        return name
    label = socket.gethostname().split(".", 1)[0].lower()
    return (re.sub(r"[^a-z0-9-]", "-", label).strip("-") or "localhost")[:63]


GPUCONFIG_HOST_NAME = _host_name()
GPUCONFIG_DEFAULT_HOST = os.environ.get("GPUCONFIG_DEFAULT_HOST") or None
# all: the single-box worker (this host's agent and the central worker in one process);
# agent: a GPU host's agent only (no database: it reports through the broker).
GPUCONFIG_ROLE = env_choice("GPUCONFIG_ROLE", "all", {"all", "agent"})
GPUCONFIG_HEARTBEAT_INTERVAL = env_float("GPUCONFIG_HEARTBEAT_INTERVAL", 30.0)
if GPUCONFIG_HEARTBEAT_INTERVAL <= 0:
    raise ImproperlyConfigured("GPUCONFIG_HEARTBEAT_INTERVAL must be above 0 seconds")
if GPUCONFIG_ROLE == "agent":
    # The agent reads only its host's queue and declares nothing (its broker user may not),
    # answers no remote control and sends no events: none of that is in its permissions.
    CELERY_TASK_QUEUES = [_routing.host_queue(GPUCONFIG_HOST_NAME, declare=False)]
    CELERY_TASK_DEFAULT_QUEUE = _routing.host_queue_name(GPUCONFIG_HOST_NAME)
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
    CELERY_WORKER_SEND_TASK_EVENTS = False
else:
    # The central worker also reads what agents report (a single box's has nothing there:
    # its own host's heartbeat is written in-process).
    CELERY_TASK_QUEUES = [_Queue("celery"), _routing.central_queue()]

CELERY_BEAT_SCHEDULE = {
    "detect-gpus": {
        "task": "gpus.tasks.detect_gpus_task",
        "schedule": float(GPUCONFIG_SCAN_INTERVAL),
        "options": {"expires": max(GPUCONFIG_SCAN_INTERVAL - 1, 1)},
    },
    "refresh-live-containers": {
        "task": "assignments.tasks.live_refresh_task",
        "schedule": 10.0,
        "options": {"expires": 9},
    },
    "sync-config-files": {
        "task": "assignments.tasks.config_files_sync_task",
        "schedule": float(GPUCONFIG_RECOVERY_INTERVAL),
        "options": {"expires": max(GPUCONFIG_RECOVERY_INTERVAL - 1, 1)},
    },
    "recover-applies": {
        "task": "assignments.tasks.apply_recover_task",
        "schedule": float(GPUCONFIG_RECOVERY_INTERVAL),
        "options": {"expires": max(GPUCONFIG_RECOVERY_INTERVAL - 1, 1)},
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "gpuconfig_site.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["gpuconfig_site.auth.ReadAuthenticatedWriteStaff"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "gpuconfig_site.api.exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "gpuconfig_site.negotiation.ContentNegotiation",
    "DEFAULT_PARSER_CLASSES": [
        "gpuconfig_site.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "gpuconfig API",
    "DESCRIPTION": "Detect GPUs, plan which GPU each AI service runs on, save and apply it.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and ReDoc from the installed sidecar package: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Reading the API needs an account (or the key); so does reading its description.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
}
# Named API keys: looked up in the ``X-API-Key`` header.
API_KEY_CUSTOM_HEADER = "HTTP_X_API_KEY"

# Failed logins (page and admin) and wrong API keys are counted per client address by
# django-axes, in the database (so it holds when Redis is down); past the limit the client gets
# 429 until the cool-off passes, whatever it sends.
AXES_FAILURE_LIMIT = env_int("GPUCONFIG_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = env_int("GPUCONFIG_LOGIN_COOLOFF", 900) / 3600  # hours
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "gpuconfig_site.auth.lockout_response"
AXES_VERBOSE = False
# The database handler, asked only about addresses that failed lately (gpuconfig_site/lockout.py).
AXES_HANDLER = "gpuconfig_site.lockout.CachedLockoutHandler"

# --- Operating it: health, metrics, logs ------------------------------------------------------
# Who may scrape /metrics without the API key: addresses or networks, comma-separated.
GPUCONFIG_METRICS_ALLOW = env_list("GPUCONFIG_METRICS_ALLOW", "127.0.0.1,::1")
# gunicorn's bind address, used by `gpuconfig serve` and the service units.
GPUCONFIG_BIND = os.environ.get("GPUCONFIG_BIND", "127.0.0.1:8000")
GPUCONFIG_LOG_FORMAT = env_choice("GPUCONFIG_LOG_FORMAT", "text", {"text", "json"})
MIDDLEWARE.insert(0, "ops.logs.RequestIdMiddleware")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "ops.logs.ContextFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": GPUCONFIG_LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("GPUCONFIG_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
# The worker logs through LOGGING above (JSON included) rather than Celery's own setup.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Web edges: client address behind a proxy, Content-Security-Policy ------------------------
# Reverse proxies whose X-Forwarded-For is believed (addresses or networks, comma-separated).
# Off by default: the client is REMOTE_ADDR. Set it only to the proxy's own address; then the
# lockout counts the client the proxy names, not the proxy (gpuconfig_site/lockout.py).
GPUCONFIG_TRUSTED_PROXIES = env_list("GPUCONFIG_TRUSTED_PROXIES")
AXES_CLIENT_IP_CALLABLE = "gpuconfig_site.lockout.client_address"

# One policy for the page (HTMX), the admin and the API docs (Swagger UI from the sidecar, its
# script served apart): scripts only from this site; inline styles are allowed (the page's bars
# set widths in style attributes, Swagger UI and htmx add <style>).
CSP_DIRECTIVES = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
if django.VERSION >= (6, 0):
    SECURE_CSP = CSP_DIRECTIVES
    MIDDLEWARE.insert(1, "django.middleware.csp.ContentSecurityPolicyMiddleware")
else:  # Django 5.2: the django-csp package
    CONTENT_SECURITY_POLICY = {"DIRECTIVES": CSP_DIRECTIVES}
    MIDDLEWARE.insert(1, "csp.middleware.CSPMiddleware")

# --- the compose stack's GPU forms, profiles and lint ---
# Compose profiles gpuconfig treats as active, on top of COMPOSE_PROFILES (comma-separated);
# they are passed to the tool as --profile.
GPUCONFIG_COMPOSE_PROFILES = os.environ.get("GPUCONFIG_COMPOSE_PROFILES", "")
# Where the host's CDI specs are read by the lint (comma-separated folders).
GPUCONFIG_CDI_SPEC_DIRS = env_list("GPUCONFIG_CDI_SPEC_DIRS", "/etc/cdi,/var/run/cdi")
