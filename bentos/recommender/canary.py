"""The canary as the service serves it: which customers go to the challenger (a
:class:`~recsys_assets.release.canary.routing.CanaryConfig`), the challenger model and its
feature reader, and following the canary state file (``RECSYS_CANARY_STATE``) while serving.

At start the state file, when it exists, overrides the environment's ``RECSYS_CHALLENGER_TAG``,
``RECSYS_CANARY_SHARE`` and ``RECSYS_CANARY_SALT``. Then at most once a second a request stats
the file and, when it changed, re-reads it: a share change or a rollback takes effect at once; a
new challenger is loaded in a worker thread while the current configuration keeps serving, and
swapped in on the event loop. A challenger comes from the local BentoML store (a canary is
decided at deploy time, so it is not bundled into the bento)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time

import bentoml

from recsys_assets.config import variables

logger = logging.getLogger("bentoml.recommender")  # the service's logger, in every module

STATE_CHECK_S = 1.0  # how often (at most) a request looks at the canary state file


def load_challenger(tag: str):
    """The challenger from the local BentoML store; a clear error when it is missing or
    corrupt."""
    from recsys_assets.serving.registry import load_promoted

    try:
        stored = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound as error:
        raise RuntimeError(
            f"challenger model {tag} ({variables.CHALLENGER_TAG.name}) is not in the BentoML model "
            f"store: {error}"
        ) from error
    try:
        return load_promoted(stored.path, dict(stored.info.metadata))
    except Exception as error:
        raise RuntimeError(f"challenger model {tag}: {error}") from error


def challenger_reader(model, store, champion_items, refresh_s: float, metrics):
    """The challenger's timed feature reader: the champion's reader ``champion_items`` (sharing
    its in-memory item features) when the catalogues match, else one of its own, warmed."""
    from recsys_assets.serving.model import FeastOnlineReader

    inner = champion_items
    if list(model.catalogue) != inner.catalogue:
        inner = FeastOnlineReader(store, list(model.catalogue), refresh_s)
        inner.items()
    return metrics.timed(inner, model.version)


class CanaryFollower:
    """The canary configuration and challenger in force, kept in step with the state file.

    ``config.assign(customer_id)`` says which variant serves a customer; ``challenger`` and
    ``challenger_reader`` are the challenger's model and reader (None without one). Nothing here
    raises on the request path: a state file that cannot be read, or a challenger that cannot
    be loaded, is logged (and counted) and the current configuration keeps serving."""

    def __init__(self, settings, metrics) -> None:
        from recsys_assets.release.canary.routing import CanaryConfig

        self.settings = settings
        self.metrics = metrics
        self.state_path = settings.canary_state
        self.config = CanaryConfig(challenger_tag=None)  # replaced by start
        self.challenger = None  # the canary's challenger model, when one is configured
        self.challenger_reader = None
        self.challenger_tag = None  # the tag self.challenger was loaded from
        # The state file's (inode, mtime, size) last read, when to look again, the configuration
        # it asks for, the challenger loading or failed to load.
        self._seen = None
        self._check_at = 0.0
        self._desired = None
        self._loading = None
        self._failed_tag = None
        self._load_task = None
        self._store = self._items_reader = None  # for challengers loaded later (set by start)

    def start(self, config, seen, challenger, reader, store, champion_items) -> None:
        """Serve ``config`` (with its ``challenger`` and ``reader`` when it has one) as loaded at
        start; ``seen`` is the state file's signature from :meth:`initial_config`, ``store`` and
        the champion's reader ``champion_items`` serve challengers loaded later."""
        self.config, self.challenger, self.challenger_reader = config, challenger, reader
        self.challenger_tag = config.challenger_tag if challenger is not None else None
        self._store, self._items_reader = store, champion_items
        self._seen, self._check_at = seen, time.monotonic() + STATE_CHECK_S

    def _signature(self):
        """The state file's (inode, mtime, size), None when there is none: an atomic rewrite
        gets a new inode, so a change is seen even within the clock's resolution."""
        try:
            stat = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        except OSError as error:  # unreadable folder: a signature of its own, read fails once
            return ("error", error.errno)
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def initial_config(self, from_env):
        """The canary at start: the state file's when it exists (else the environment's), with
        the file's signature (taken before reading it: a later change is seen on the next
        check). A file that cannot be read serves the champion only, logged, until it changes."""
        from recsys_assets.release.canary.routing import CanaryConfig, read_canary_state

        seen = self._signature()
        try:
            state = read_canary_state(self.state_path)
        except (OSError, ValueError) as error:
            logger.error("canary state unreadable (%s): serving the champion only", error)
            return CanaryConfig(challenger_tag=None), seen
        if state is None:
            return from_env, seen
        logger.info(
            "canary state %s (generation %d) overrides the environment",
            self.state_path,
            state.generation,
        )
        return state.config(), seen

    def follow(self) -> None:
        """Called by each request (on the event loop): at most every STATE_CHECK_S, look at
        the state file. About 1 us when it is not time yet or nothing changed."""
        if time.monotonic() >= self._check_at:
            self._check_at = time.monotonic() + STATE_CHECK_S
            self._follow_state()

    def _follow_state(self) -> None:
        """Stat the state file and, when it changed, read it and move to what it asks for. A
        file that is missing or cannot be read keeps the last good configuration (logged once
        per change of the file)."""
        from recsys_assets.release.canary.routing import read_canary_state

        seen = self._signature()
        if seen == self._seen:
            return
        self._seen = seen
        self._failed_tag = None  # a changed file may name a challenger that failed before
        if seen is None:
            logger.warning(
                "canary state %s is gone: keeping the current canary (%s at share %g)",
                self.state_path,
                self.config.challenger_tag,
                self.config.effective_share,
            )
            return
        try:
            state = read_canary_state(self.state_path)
        except (OSError, ValueError) as error:
            logger.error("canary state unreadable (%s): keeping the last good canary", error)
            return
        if state is None:  # removed between the stat and the read: seen on the next check
            self._seen = None
            return
        self._desired = state.config()
        logger.info(
            "canary state generation %d: challenger %s at share %g (%s, by %s)",
            state.generation,
            state.challenger_tag,
            state.share,
            state.reason or "no reason given",
            state.updated_by or "unknown",
        )
        self._reconcile()

    def _reconcile(self) -> None:
        """Move towards the configuration the state file asks for: no challenger traffic (a
        rollback) or a share change of the loaded challenger at once; a challenger not loaded
        yet is loaded in a background thread while the current configuration keeps serving."""
        desired = self._desired
        if desired is None or desired == self.config:
            return
        if desired.effective_share == 0.0:
            if desired.challenger_tag != self.challenger_tag:  # free a challenger left behind
                self.challenger = self.challenger_reader = self.challenger_tag = None
            self._set_config(desired)
        elif self.challenger is not None and desired.challenger_tag == self.challenger_tag:
            self._set_config(desired)
        elif desired.challenger_tag not in (self._loading, self._failed_tag):
            self._loading = desired.challenger_tag
            task = asyncio.get_running_loop().create_task(self._load_in_background(self._loading))
            self._load_task = task  # a reference, so the task is not collected mid-way

    def _set_config(self, config) -> None:
        self.config = config
        self.metrics.canary_share.set(config.effective_share)
        logger.info(
            "canary now: challenger %s for %.1f%% of customers",
            config.challenger_tag,
            100 * config.effective_share,
        )

    async def _load_in_background(self, tag: str) -> None:
        """Load challenger ``tag`` in a thread; on the event loop again, swap it in if the state
        file still asks for it. A failure is logged and counted, never raised."""
        try:
            model, reader = await asyncio.to_thread(self._build_challenger, tag)
        except Exception as error:
            self.metrics.challenger_load_failures.inc()
            self._failed_tag = tag
            logger.error("canary: challenger %s not loaded, serving as before: %s", tag, error)
            return
        finally:
            self._loading = None
        if self._desired is not None and self._desired.challenger_tag == tag:
            self.challenger, self.challenger_reader, self.challenger_tag = model, reader, tag
            logger.info("canary: challenger %s loaded (model %s)", tag, model.version)
        self._reconcile()  # the share now, or the next challenger the file asked for meanwhile

    def _build_challenger(self, tag: str):
        """The challenger model and its feature reader; runs in a worker thread."""
        model = load_challenger(tag)
        refresh = self.settings.serving.item_refresh_s
        reader = challenger_reader(model, self._store, self._items_reader, refresh, self.metrics)
        gc.freeze()  # as at start: the new model's objects out of the collector's generations
        return model, reader
