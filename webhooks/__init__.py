"""The HTTP edge: verify, validate, dedupe and persist events; probes; the admin API.

``create_app`` is the only entry point; gunicorn runs
``gunicorn -c gunicorn.conf.py "webhooks:create_app()"`` (settings from the environment;
the config file retires each gunicorn worker's Prometheus files when it exits). The edge
never calls a provider and never publishes a task: ``Inbox.accept`` writes the event, its
units and the outbox entries atomically, and the relay publishes from the outbox.
"""

from __future__ import annotations

from flask import Flask

from tasks.routing import load_rules
from webhooks.broker_probe import BROKER_CHECK_TIMEOUT_SECONDS, BrokerProbe
from webhooks.context import EXTENSION_KEY, EdgeContext, edge_context
from webhooks.errors import register_error_handlers
from worker.celery_app import make_celery
from worker.config import Settings, SettingsError
from worker.observability import configure_logging, init_sentry, skip_unused_record_fields
from worker.redis_connect import redis_client
from worker.signing import decode_secret
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys

__all__ = ["create_app", "EdgeContext", "edge_context", "REDIS_TIMEOUT_SECONDS"]

# Socket timeouts for the edge's Redis: a request fails fast (503) rather than hanging a
# gunicorn thread when Redis stalls.
REDIS_TIMEOUT_SECONDS = 1.5
REDIS_CONNECT_TIMEOUT_SECONDS = 1.0


def create_app(settings: Settings | None = None) -> Flask:
    """Build the receiver app from ``settings`` (``Settings.from_env()`` when None).

    No connection is made here: Redis and the broker are reached on first use. When the
    settings come from the environment (a real process, not a test), logging is configured
    from them (``LOG_FORMAT``) and Sentry is initialised when ``SENTRY_DSN`` is set.

    Raises:
        SettingsError: a required setting is missing or a secret is not valid base64.
        RulesError: the routing rules file is invalid.
    """
    from_env = settings is None
    settings = settings or Settings.from_env()
    settings.require("REDIS_URL", "CONIQ_WEBHOOK_SECRETS", "EVENT_SECRETS", "ADMIN_TOKEN")
    _check_secrets("CONIQ_WEBHOOK_SECRETS", settings.coniq_webhook_secrets)
    _check_secrets("EVENT_SECRETS", settings.event_secrets)
    rules = load_rules(settings.rules_file)
    client = redis_client(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
        # Fail the request rather than retrying inside it: the sender retries on 503.
        retry_on_timeout=False,
    )
    if from_env:
        configure_logging(settings)
        skip_unused_record_fields()
        init_sentry(settings, component="web")
    keys = Keys(settings.key_prefix)
    celery = make_celery(settings)
    context = EdgeContext(
        settings=settings,
        redis=client,
        keys=keys,
        inbox=Inbox(
            client,
            keys,
            wait_replicas=settings.store_wait_replicas,
            wait_timeout_ms=settings.store_wait_timeout_ms,
        ),
        rules=rules,
        celery=celery,
        broker_probe=BrokerProbe(
            celery, settings.celery_broker_url, timeout=BROKER_CHECK_TIMEOUT_SECONDS
        ),
    )

    app = Flask(__name__)
    # No redirect for "//" in a path: werkzeug's 308 builds its absolute Location from the
    # request's Host header, which a client chooses. A doubled slash is simply not found.
    app.url_map.merge_slashes = False
    app.extensions[EXTENSION_KEY] = context
    # Ingest reads the body itself (with its own cap); this caps everything else.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    # Imported here, after this package is initialised: blueprint modules (admin's in
    # particular) may import names from ``webhooks`` itself.
    from webhooks import (
        admin,
        console,
        erasures,
        health,
        ingest,
        openapi,
        prometheus,
        refused_items,
        reveal,
    )

    openapi.document_bytes()  # a broken package fails here, not on the first request
    app.register_blueprint(ingest.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(prometheus.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(reveal.bp)  # audited reveal of full codes (issue 19)
    app.register_blueprint(refused_items.bp)
    from webhooks import console_lanes, lanes_api  # provider lanes (issue 18)

    app.register_blueprint(lanes_api.bp)
    app.register_blueprint(console_lanes.bp)
    app.register_blueprint(erasures.bp)
    console.init_app(app, settings)
    register_error_handlers(app)
    return app


def _check_secrets(variable: str, secrets: tuple[str, ...]) -> None:
    for position, secret in enumerate(secrets, start=1):
        try:
            decode_secret(secret)
        except ValueError as exc:
            raise SettingsError(variable, f"secret #{position}: {exc}") from None
