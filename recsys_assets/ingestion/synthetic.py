"""Seeded synthetic retail events with drift whose ground truth is known.

Why: the real dataset (UCI Online Retail) is one fixed history, so drift detection, retraining
triggers and cold-start handling cannot be checked against a known truth. This generator draws
view -> add_to_cart -> purchase sessions from a small latent model and can inject three kinds of
drift, each exposed as ground truth (:func:`item_catalogue`, :func:`user_segment`):

- :class:`PreferenceShift`: a user segment's tastes move toward target categories from a date;
- :class:`SeasonalBoost`: a category is more attractive between two dates;
- :class:`NewItems`: items that do not exist before their launch date.

The model: users have Dirichlet tastes over categories, a price sensitivity, an activity level,
a home country and a preferred device; items have a category, a lognormal price and a lognormal
popularity. Sessions start at daytime-weighted hours (hour-of-day and day-of-week effects); each
view picks an item with probability proportional to
``taste[category] * boost[category] * popularity * (price / typical price) ** -sensitivity`` among
the items launched by the session's start. Some views are added to the cart and some sessions
with a cart end in one order (id ``S000001``, ...) for most of the cart.

Categories are named from :data:`CATEGORY_NAMES` (``Category <n>`` past its end); drift knobs
refer to them by name. Same config (seed included) -> identical frame. Pure numpy/pandas.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, is_dataclass
from datetime import date, datetime, time
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from recsys_assets.core import constants as c

__all__ = [
    "CATALOGUE_COLUMNS",
    "CATEGORY",
    "CATEGORY_NAMES",
    "DEFAULT_COUNTRIES",
    "DEFAULT_DEVICES",
    "EVENT_COLUMNS",
    "LAUNCH_TS",
    "LatentUsers",
    "NewItems",
    "PreferenceShift",
    "SeasonalBoost",
    "SyntheticConfig",
    "category_names",
    "generate_events",
    "item_catalogue",
    "user_segment",
]

# --- Names ----------------------------------------------------------------------------------

CATEGORY = "category"  # item_catalogue: the item's category name
LAUNCH_TS = "launch_ts"  # item_catalogue: first moment the item can appear in events

EVENT_COLUMNS: tuple[str, ...] = (
    c.EVENT_TS,
    c.USER_ID,
    c.ITEM_ID,
    c.EVENT_TYPE,
    c.QUANTITY,
    c.UNIT_PRICE,
    c.ORDER_ID,
    c.DESCRIPTION,
    c.COUNTRY,
    c.DEVICE,
)
CATALOGUE_COLUMNS: tuple[str, ...] = (c.ITEM_ID, CATEGORY, c.UNIT_PRICE, LAUNCH_TS)

CATEGORY_NAMES: tuple[str, ...] = (
    "Home Decor",
    "Kitchen",
    "Garden",
    "Toys",
    "Stationery",
    "Lighting",
    "Jewellery",
    "Christmas",
    "Bags",
    "Party",
    "Candles",
    "Textiles",
)

DEFAULT_COUNTRIES: tuple[tuple[str, float], ...] = (
    ("United Kingdom", 0.82),
    ("Germany", 0.05),
    ("France", 0.05),
    ("EIRE", 0.03),
    ("Netherlands", 0.03),
    ("Spain", 0.02),
)
DEFAULT_DEVICES: tuple[tuple[str, float], ...] = (("web", 0.55), ("app", 0.35), ("tablet", 0.10))

# --- Behaviour constants (not knobs: they shape realism, not the experiments) ---------------

_DEFAULT_START = date(2024, 1, 1)
_DAY_S = 86_400
_HOUR_WEIGHTS = np.array(
    [0.15, 0.08, 0.05, 0.04, 0.04, 0.06, 0.15, 0.35, 0.60, 0.85, 1.00, 1.05,
     1.10, 1.05, 0.95, 0.90, 0.90, 0.95, 1.05, 1.15, 1.20, 1.00, 0.65, 0.35]
)  # fmt: skip
_WEEKDAY_WEIGHTS = np.array([1.00, 1.02, 1.00, 1.05, 0.90, 0.80, 1.10])  # Monday first
_TASTE_ALPHA = 0.5  # Dirichlet concentration: < 1 gives users a few favourite categories
_PRICE_SIGMA_SHARE = 1 / 6  # sd of log price as a share of the log price range
_SESSION_GAP_S = 60  # a user's sessions never overlap and are at least this far apart
_PREFERRED_DEVICE_P = 0.8  # chance a session uses the user's preferred device
_HOME_COUNTRY_P = 0.97  # chance a session comes from the user's home country
_PURCHASE_LINE_P = 0.9  # chance a cart line is bought in a purchasing session
_MAX_QUANTITY = 24
_CHUNK_CELLS = 1_000_000  # sessions x categories cells per chunk (bounds memory)
_SENSITIVITY_STEP = 0.05  # price sensitivities are multiples of this (tabulated weights)
_U_MAX = 1.0 - 1e-9  # keeps each item draw inside its category's stretch of the running sum

# Independent random streams, so that e.g. adding new items leaves the users unchanged.
_STREAM_USERS, _STREAM_ITEMS, _STREAM_SESSIONS, _STREAM_CHOICE, _STREAM_SEGMENT = range(5)


# --- Knobs ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PreferenceShift:
    """From ``start`` on, a user segment's tastes move toward ``target_categories``.

    The segment is ``user_fraction`` of the users (of those whose home is ``country``, when set),
    drawn deterministically from the seed (see :func:`user_segment`); everyone else is the
    control group. A segment user's taste becomes ``(1 - w) * taste + w * uniform(targets)`` with
    ``w = strength``, reached linearly over ``ramp_days`` when that is > 0.
    """

    target_categories: tuple[str, ...]
    start: date
    strength: float = 0.7
    user_fraction: float = 0.3
    country: str | None = None
    ramp_days: int = 0

    def __post_init__(self) -> None:
        _set(self, "target_categories", _as_names(self.target_categories, "target_categories"))
        _set(self, "start", _as_date(self.start, "start"))
        _set(self, "strength", _as_float(self.strength, "strength", low=0.0, high=1.0))
        _set(self, "user_fraction", _as_float(self.user_fraction, "user_fraction", 0.0, 1.0))
        if self.country is not None and not isinstance(self.country, str):
            raise ValueError(f"country must be a country name, got {self.country!r}")
        _set(self, "ramp_days", _as_int(self.ramp_days, "ramp_days", low=0))


@dataclass(frozen=True, kw_only=True)
class SeasonalBoost:
    """``category`` is ``factor`` times as attractive for sessions in ``[start, end)``."""

    category: str
    start: date
    end: date  # exclusive
    factor: float = 3.0

    def __post_init__(self) -> None:
        _set(self, "category", _as_name(self.category, "category"))
        _set(self, "start", _as_date(self.start, "start"))
        _set(self, "end", _as_date(self.end, "end"))
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        _set(self, "factor", _as_float(self.factor, "factor", low=0.0, low_open=True))


@dataclass(frozen=True, kw_only=True)
class NewItems:
    """``n_items`` items of ``category`` that exist from ``launch`` (midnight) on, not before.

    Their popularity is drawn like everyone else's and multiplied by ``popularity`` (> 1 gives
    them a launch push). Their ids follow the base catalogue's.
    """

    category: str
    launch: date
    n_items: int = 10
    popularity: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "category", _as_name(self.category, "category"))
        _set(self, "launch", _as_date(self.launch, "launch"))
        _set(self, "n_items", _as_int(self.n_items, "n_items", low=1))
        _set(self, "popularity", _as_float(self.popularity, "popularity", 0.0, low_open=True))


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Every knob of the generator; ``SyntheticConfig()`` is a small but realistic shop.

    Built from YAML with :meth:`from_dict` (dates as ISO strings, drift knobs as lists of
    mappings); :meth:`to_dict` gives the same plain form back.
    """

    n_users: int = 500
    n_items: int = 300  # base catalogue; NewItems come on top
    n_categories: int = 8
    start: date = _DEFAULT_START  # first day (midnight) of the window
    days: int = 90
    seed: int = c.SEED
    sessions_per_user_per_week: float = 1.5  # mean; users' activity varies around it
    views_per_session: float = 5.0  # mean, at least 1
    add_to_cart_rate: float = 0.2  # chance a view is added to the cart
    purchase_rate: float = 0.6  # chance a session with a cart ends in an order
    countries: tuple[tuple[str, float], ...] = DEFAULT_COUNTRIES  # (name, weight) of homes
    devices: tuple[tuple[str, float], ...] = DEFAULT_DEVICES  # (name, weight) preferred devices
    price_range: tuple[float, float] = (0.5, 50.0)  # unit prices lie in [low, high]
    preference_shifts: tuple[PreferenceShift, ...] = ()
    seasonal_boosts: tuple[SeasonalBoost, ...] = ()
    new_items: tuple[NewItems, ...] = ()

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_categories", "days"):
            _set(self, name, _as_int(getattr(self, name), name, low=1))
        _set(self, "start", _as_date(self.start, "start"))
        _set(self, "seed", _as_int(self.seed, "seed", low=0))
        _set(
            self,
            "sessions_per_user_per_week",
            _as_float(self.sessions_per_user_per_week, "sessions_per_user_per_week", 0.0),
        )
        _set(self, "views_per_session", _as_float(self.views_per_session, "views_per_session", 1))
        _set(self, "add_to_cart_rate", _as_float(self.add_to_cart_rate, "add_to_cart_rate", 0, 1))
        _set(self, "purchase_rate", _as_float(self.purchase_rate, "purchase_rate", 0.0, 1.0))
        _set(self, "countries", _as_weighted(self.countries, "countries"))
        _set(self, "devices", _as_weighted(self.devices, "devices"))
        _set(self, "price_range", _as_price_range(self.price_range))
        _set(self, "preference_shifts", _as_knobs(self.preference_shifts, PreferenceShift))
        _set(self, "seasonal_boosts", _as_knobs(self.seasonal_boosts, SeasonalBoost))
        _set(self, "new_items", _as_knobs(self.new_items, NewItems))
        self._check_references()

    def _check_references(self) -> None:
        known = category_names(self)
        countries = [name for name, _ in self.countries]
        for i, shift in enumerate(self.preference_shifts):
            for name in shift.target_categories:
                _check_category(name, known, f"preference_shifts[{i}].target_categories")
            if shift.country is not None and shift.country not in countries:
                raise ValueError(
                    f"preference_shifts[{i}].country: unknown country {shift.country!r}; "
                    f"known: {countries}"
                )
        for i, boost in enumerate(self.seasonal_boosts):
            _check_category(boost.category, known, f"seasonal_boosts[{i}].category")
        for i, new in enumerate(self.new_items):
            _check_category(new.category, known, f"new_items[{i}].category")

    @property
    def end(self) -> date:
        """First day after the window (exclusive end)."""
        return date.fromordinal(self.start.toordinal() + self.days)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SyntheticConfig:
        """A config from plain (YAML) settings; unknown or malformed settings raise ValueError."""
        if not isinstance(d, Mapping):
            raise ValueError(f"synthetic settings must be a mapping, got {type(d).__name__}")
        _check_keys(d, cls, "synthetic settings")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """Plain settings (ISO dates, lists, mappings) that :meth:`from_dict` turns back."""
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        out["countries"] = dict(self.countries)
        out["devices"] = dict(self.devices)
        return out


def category_names(config: SyntheticConfig) -> tuple[str, ...]:
    """The config's category names, in category index order."""
    n = config.n_categories
    extra = tuple(f"Category {i + 1}" for i in range(len(CATEGORY_NAMES), n))
    return (CATEGORY_NAMES + extra)[:n]


# --- Public generator -----------------------------------------------------------------------


def generate_events(config: SyntheticConfig) -> pd.DataFrame:
    """One row per event (columns :data:`EVENT_COLUMNS`), sorted by time; same config, same frame.

    Views and add_to_cart rows have no order id; the purchase lines of one session share an
    order id and a checkout timestamp, later than their add_to_cart rows, which follow the views.
    """
    world = _build_world(config)
    sessions = _draw_sessions(config, world)
    if sessions.user.size == 0:
        return _empty_events()
    rng = _rng(config, _STREAM_CHOICE)
    view_item = _choose_items(config, world, sessions, rng)
    return _assemble(config, world, sessions, view_item, rng)


def item_catalogue(config: SyntheticConfig) -> pd.DataFrame:
    """Ground truth of every item (base and new): id, category, unit price and launch time."""
    world = _build_world(config)
    categories = np.array(world.categories, dtype=object)
    launch = np.datetime64(config.start, "s") + world.item_launch_s.astype("timedelta64[s]")
    return pd.DataFrame(
        {
            c.ITEM_ID: pd.array(world.item_ids, dtype="string"),
            CATEGORY: pd.array(categories[world.item_category], dtype="string"),
            c.UNIT_PRICE: world.item_price,
            LAUNCH_TS: launch.astype("datetime64[ns]"),
        },
        columns=list(CATALOGUE_COLUMNS),
    )


def user_segment(config: SyntheticConfig, shift: PreferenceShift) -> set[str]:
    """User ids in ``shift``'s segment under ``config`` (whether or not the config holds it)."""
    world = _build_world(config)
    return {str(world.user_ids[i]) for i in np.flatnonzero(_segment_mask(config, world, shift))}


class LatentUsers:
    """Ground truth of the users, for simulations that act as the shoppers themselves.

    Why: a closed-loop simulation must make its shoppers react with the same hidden tastes (and
    the same drift) the generator draws its events from. Arrays are in user order, aligned with
    :attr:`user_ids`; :meth:`category_weights` is the generator's own per-session category
    weighting, so the two cannot disagree.
    """

    def __init__(self, config: SyntheticConfig) -> None:
        world = _build_world(config)
        self.config = config
        self.categories: tuple[str, ...] = world.categories
        self.user_ids: np.ndarray = world.user_ids.copy()  # object array of "U00001", ...
        self.home_country: np.ndarray = np.array([n for n, _ in config.countries], dtype=object)[
            world.home_country
        ]  # names
        self.device: np.ndarray = np.array([n for n, _ in config.devices], dtype=object)[
            world.device
        ]  # preferred device names
        self.activity: np.ndarray = world.activity.copy()  # multiplies the session rate (mean 1)
        self.sensitivity: np.ndarray = world.sensitivity.copy()  # exponent of the relative price
        self.taste: np.ndarray = world.taste.copy()  # users x categories before any drift
        self.segments: tuple[np.ndarray, ...] = tuple(
            _segment_mask(config, world, shift) for shift in config.preference_shifts
        )  # one boolean mask over the users per config.preference_shifts entry
        self._world = world

    def category_weights(self, users: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Taste after preference shifts (with their ramps) times seasonal boosts (users x cats).

        ``users`` are user indices, ``seconds`` the moments (seconds from the window start,
        one per user or one for all), exactly what the generator weighs a session's categories
        by. Rows need not sum to 1 while a boost is active.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        t = np.broadcast_to(np.asarray(seconds, dtype=np.float64), users.shape)
        return _category_weights(self.config, self._world, users, t, list(self.segments))


# --- The latent world -----------------------------------------------------------------------


@dataclass(frozen=True)
class _World:
    categories: tuple[str, ...]
    user_ids: np.ndarray  # object array of "U00001", ...
    taste: np.ndarray  # users x categories, rows sum to 1
    sensitivity: np.ndarray  # users; exponent of the relative price, multiple of the step
    activity: np.ndarray  # users; multiplies the session rate (mean 1)
    home_country: np.ndarray  # users; index into config.countries
    device: np.ndarray  # users; preferred device, index into config.devices
    item_ids: np.ndarray  # object array of "I00001", ... (base catalogue, then new items)
    item_category: np.ndarray  # items; category index
    item_price: np.ndarray  # items; unit price, 2 decimals
    item_popularity: np.ndarray  # items; > 0
    item_launch_s: np.ndarray  # items; seconds from the window start (0 for the base catalogue)


def _rng(config: SyntheticConfig, stream: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, stream, *extra])


def _offset_s(config: SyntheticConfig, day: date) -> int:
    return (day - config.start).days * _DAY_S


def _build_world(config: SyntheticConfig) -> _World:
    categories = category_names(config)
    n_users, n_cat = config.n_users, len(categories)

    rng = _rng(config, _STREAM_USERS)
    taste = rng.dirichlet(np.full(n_cat, _TASTE_ALPHA), size=n_users)
    sensitivity = (
        np.round(rng.gamma(2.0, 0.4, size=n_users) / _SENSITIVITY_STEP) * _SENSITIVITY_STEP
    )
    activity = rng.gamma(1.5, 1 / 1.5, size=n_users)
    home = rng.choice(len(config.countries), size=n_users, p=_probabilities(config.countries))
    device = rng.choice(len(config.devices), size=n_users, p=_probabilities(config.devices))

    rng = _rng(config, _STREAM_ITEMS)
    price_level = rng.normal(0.0, 0.35, size=n_cat)  # some categories are dearer than others
    blocks = [(rng.permutation(np.arange(config.n_items) % n_cat), 1.0, 0)]
    for new in config.new_items:
        block = np.full(new.n_items, categories.index(new.category))
        blocks.append((block, new.popularity, _offset_s(config, new.launch)))
    cats, prices, pops, launches = [], [], [], []
    for block, boost, launch in blocks:
        cats.append(block)
        prices.append(_draw_prices(rng, block, price_level, config.price_range))
        pops.append(rng.lognormal(0.0, 1.0, size=block.size) * boost)
        launches.append(np.full(block.size, launch, dtype=np.int64))
    item_category = np.concatenate(cats)

    return _World(
        categories=categories,
        user_ids=_ids("U", n_users),
        taste=taste,
        sensitivity=sensitivity,
        activity=activity,
        home_country=home,
        device=device,
        item_ids=_ids("I", item_category.size),
        item_category=item_category,
        item_price=np.concatenate(prices),
        item_popularity=np.concatenate(pops),
        item_launch_s=np.concatenate(launches),
    )


def _draw_prices(
    rng: np.random.Generator, cats: np.ndarray, level: np.ndarray, bounds: tuple[float, float]
) -> np.ndarray:
    """Lognormal prices skewed to the cheap end of the range, clipped into it, 2 decimals."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    mean = lo + 0.35 * (hi - lo) + level[cats]
    log_price = rng.normal(mean, (hi - lo) * _PRICE_SIGMA_SHARE)
    price = np.clip(np.round(np.exp(log_price), 2), bounds[0], bounds[1])
    return np.maximum(price, 0.01)


def _ids(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}{i:05d}" for i in range(1, n + 1)], dtype=object)


def _probabilities(weighted: tuple[tuple[str, float], ...]) -> np.ndarray:
    w = np.array([weight for _, weight in weighted], dtype=float)
    return w / w.sum()


def _segment_mask(config: SyntheticConfig, world: _World, shift: PreferenceShift) -> np.ndarray:
    """Exactly round(user_fraction * eligible) users, chosen by a stream keyed on the segment."""
    eligible = np.ones(config.n_users, dtype=bool)
    if shift.country is not None:
        names = [name for name, _ in config.countries]
        index = names.index(shift.country) if shift.country in names else -1
        eligible = world.home_country == index
    candidates = np.flatnonzero(eligible)
    key = zlib.crc32(repr((shift.target_categories, shift.user_fraction, shift.country)).encode())
    chosen = _rng(config, _STREAM_SEGMENT, key).permutation(candidates)
    mask = np.zeros(config.n_users, dtype=bool)
    mask[chosen[: round(shift.user_fraction * candidates.size)]] = True
    return mask


# --- Sessions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sessions:
    """Kept sessions in chronological order, and their views (session-major, in view order)."""

    user: np.ndarray
    start_s: np.ndarray  # seconds from the window start
    device: np.ndarray
    country: np.ndarray
    purchasing: np.ndarray  # ends in an order
    checkout_s: np.ndarray  # offset of the order inside the session
    view_session: np.ndarray  # per view: session index (sorted)
    view_offset_s: np.ndarray  # per view: seconds after the session start
    view_rank: np.ndarray  # per view: position inside its session
    carted: np.ndarray  # per view: added to the cart
    cart_delay_s: np.ndarray  # per view: seconds from the view to its add_to_cart


def _draw_sessions(config: SyntheticConfig, world: _World) -> _Sessions:
    rng = _rng(config, _STREAM_SESSIONS)
    rate = config.sessions_per_user_per_week * world.activity * config.days / 7
    user = np.repeat(np.arange(config.n_users), rng.poisson(rate))
    n = user.size

    day_w = _WEEKDAY_WEIGHTS[(config.start.weekday() + np.arange(config.days)) % 7]
    day = rng.choice(config.days, size=n, p=day_w / day_w.sum())
    hour = rng.choice(24, size=n, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    start = day * _DAY_S + hour * 3600 + rng.integers(0, 3600, size=n)
    n_dev, n_ctry = len(config.devices), len(config.countries)
    device = np.where(
        rng.random(n) < _PREFERRED_DEVICE_P,
        world.device[user],
        rng.choice(n_dev, size=n, p=_probabilities(config.devices)),
    )
    country = np.where(
        rng.random(n) < _HOME_COUNTRY_P,
        world.home_country[user],
        rng.choice(n_ctry, size=n, p=_probabilities(config.countries)),
    )
    n_views = 1 + rng.poisson(config.views_per_session - 1, size=n)
    wants_order = rng.random(n) < config.purchase_rate
    checkout_gap = 10 + rng.exponential(60.0, size=n).astype(np.int64)

    ptr = np.concatenate(([0], np.cumsum(n_views)))
    view_session = np.repeat(np.arange(n), n_views)
    m = view_session.size
    dwell = 5 + rng.exponential(40.0, size=m).astype(np.int64)
    carted = rng.random(m) < config.add_to_cart_rate
    # in [1, dwell - 1] because dwell >= 5: the add_to_cart lies before the next view
    cart_delay = np.maximum(1, (dwell * rng.uniform(0.2, 0.8, size=m)).astype(np.int64))

    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Sessions(**{f.name: empty for f in fields(_Sessions)})
    before = np.cumsum(dwell) - dwell  # exclusive running sum over all views
    view_offset = before - before[ptr[:-1]][view_session]
    dwell_total = before[ptr[1:] - 1] + dwell[ptr[1:] - 1] - before[ptr[:-1]]
    purchasing = wants_order & (np.add.reduceat(carted.astype(np.int64), ptr[:-1]) > 0)
    checkout = dwell_total + checkout_gap
    duration = np.where(purchasing, checkout, dwell_total)

    start = _without_overlaps(user, start, duration)
    keep = np.flatnonzero(start + duration < config.days * _DAY_S)
    order = keep[np.argsort(start[keep], kind="stable")]

    lengths = n_views[order]  # views of the kept sessions, gathered session by session
    first_view = np.repeat(ptr[order] - (np.cumsum(lengths) - lengths), lengths)
    view_idx = first_view + np.arange(lengths.sum())
    return _Sessions(
        user=user[order],
        start_s=start[order],
        device=device[order],
        country=country[order],
        purchasing=purchasing[order],
        checkout_s=checkout[order],
        view_session=np.repeat(np.arange(order.size), lengths),
        view_offset_s=view_offset[view_idx],
        view_rank=view_idx - ptr[view_session[view_idx]],
        carted=carted[view_idx],
        cart_delay_s=cart_delay[view_idx],
    )


def _without_overlaps(user: np.ndarray, start: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """Push each session of a user to after the previous one ends (plus a gap); vectorised.

    With sessions sorted per user and P the running sum of (duration + gap) before each one,
    the new start is ``P + cummax(start - P)`` within the user.
    """
    order = np.lexsort((start, user))
    u, s = user[order], start[order]
    span = duration[order] + _SESSION_GAP_S
    before = np.cumsum(span) - span
    first = np.r_[True, u[1:] != u[:-1]]
    p = before - np.maximum.accumulate(np.where(first, before, 0))
    big = np.int64(s.max() + span.sum() + 1)  # separates users inside one cummax
    shifted = np.maximum.accumulate(s - p + u * big) - u * big + p
    out = np.empty_like(start)
    out[order] = shifted
    return out


# --- Choice ---------------------------------------------------------------------------------


def _choose_items(
    config: SyntheticConfig, world: _World, sessions: _Sessions, rng: np.random.Generator
) -> np.ndarray:
    """Item index per view: a category from the session's weights, then an item within it.

    Exact two-stage form of ``P(item) ~ taste[cat] * boost[cat] * popularity * price_factor``
    over the items on sale: item weights depend only on the user's (discrete) sensitivity level
    and on which launches have happened, so they are tabulated once; a category's total weight
    in that table scales its taste in the first stage.
    """
    n_items, n_cat = world.item_category.size, len(world.categories)
    n_views = sessions.view_session.size
    u_category = rng.random(n_views)
    u_item = np.minimum(rng.random(n_views), _U_MAX)

    # Table of item weights, one row per (sensitivity level, launch epoch), items by category.
    levels, user_level = np.unique(world.sensitivity, return_inverse=True)
    launches = np.unique(world.item_launch_s[world.item_launch_s > 0])
    on_sale = world.item_launch_s <= np.concatenate(([0], launches))[:, None]  # epochs x items
    log_price = np.log(world.item_price)
    item_weight = world.item_popularity * np.exp(-levels[:, None] * (log_price - log_price.mean()))
    by_category = np.argsort(world.item_category, kind="stable")
    bounds = np.searchsorted(world.item_category[by_category], np.arange(n_cat + 1))
    table = (item_weight[:, None, :] * on_sale[None, :, :])[:, :, by_category]
    running = np.cumsum(table.ravel())  # one monotone running sum over every row
    before = np.concatenate(([0.0], running))  # before[j]: weight of table cells < j
    row_base = np.arange(levels.size * on_sale.shape[0])[:, None] * n_items
    category_total = before[row_base + bounds[1:]] - before[row_base + bounds[:-1]]

    n_epochs = on_sale.shape[0]
    row = user_level[sessions.user] * n_epochs + np.searchsorted(
        launches, sessions.start_s, "right"
    )
    segments = [_segment_mask(config, world, shift) for shift in config.preference_shifts]
    category = np.empty(n_views, dtype=np.int64)
    ptr = np.searchsorted(sessions.view_session, np.arange(sessions.user.size + 1))
    step = max(1, _CHUNK_CELLS // n_cat)
    for a in range(0, sessions.user.size, step):
        b = min(sessions.user.size, a + step)
        taste = _category_weights(
            config, world, sessions.user[a:b], sessions.start_s[a:b], segments
        )
        weights = taste * category_total[row[a:b]]
        empty = weights.sum(axis=1) <= 0  # taste only for categories with nothing on sale
        weights[empty] = category_total[row[a:b][empty]]
        cum = np.cumsum(weights, axis=1)
        cum /= cum[:, -1:]  # last column exactly 1, so a draw < 1 always lands
        views = slice(ptr[a], ptr[b])
        local = sessions.view_session[views] - a
        category[views] = (cum[local] <= u_category[views, None]).sum(axis=1)

    view_row = row[sessions.view_session] * n_items
    lo, hi = view_row + bounds[category], view_row + bounds[category + 1]
    target = before[lo] + u_item * (before[hi] - before[lo])
    cell = np.clip(np.searchsorted(running, target, side="right"), lo, hi - 1)
    return by_category[cell - view_row]


def _category_weights(
    config: SyntheticConfig,
    world: _World,
    users: np.ndarray,
    t: np.ndarray,
    segments: list[np.ndarray],
) -> np.ndarray:
    """Per session: taste after preference shifts, times seasonal boosts (sessions x cats)."""
    taste = world.taste[users]
    categories = world.categories
    for shift, segment in zip(config.preference_shifts, segments, strict=True):
        since = t - _offset_s(config, shift.start)
        if shift.ramp_days > 0:
            progress = np.clip(since / (shift.ramp_days * _DAY_S), 0.0, 1.0)
        else:
            progress = (since >= 0).astype(float)
        w = (shift.strength * progress * segment[users])[:, None]
        target = np.zeros(len(categories))
        target[[categories.index(name) for name in shift.target_categories]] = 1.0
        taste = (1 - w) * taste + w * (target / target.sum())
    for boost in config.seasonal_boosts:
        inside = (t >= _offset_s(config, boost.start)) & (t < _offset_s(config, boost.end))
        taste[:, categories.index(boost.category)] *= np.where(inside, boost.factor, 1.0)
    return taste


# --- Events ---------------------------------------------------------------------------------


def _assemble(
    config: SyntheticConfig,
    world: _World,
    s: _Sessions,
    view_item: np.ndarray,
    rng: np.random.Generator,
) -> pd.DataFrame:
    n_items = world.item_category.size
    view_ts = s.start_s[s.view_session] + s.view_offset_s

    # add_to_cart: a carted view, once per (session, item)
    cart = np.flatnonzero(s.carted)
    _, first = np.unique(s.view_session[cart] * n_items + view_item[cart], return_index=True)
    cart = cart[np.sort(first)]
    cart_session, cart_item = s.view_session[cart], view_item[cart]
    cart_ts = view_ts[cart] + s.cart_delay_s[cart]
    # cheap items sell in larger quantities
    p_single = np.clip(0.35 + 0.1 * np.log(world.item_price[cart_item]), 0.3, 0.9)
    cart_qty = np.minimum(rng.geometric(p_single), _MAX_QUANTITY)

    # purchase: most cart lines of a purchasing session (at least its first), at checkout
    first_line = np.r_[True, cart_session[1:] != cart_session[:-1]]
    bought = rng.random(cart.size) < _PURCHASE_LINE_P
    buy = np.flatnonzero(s.purchasing[cart_session] & (bought | first_line))
    buy_session = cart_session[buy]
    # order numbers count up with checkout time, like invoice numbers
    paying = np.flatnonzero(s.purchasing)
    order_no = np.zeros(s.purchasing.size, dtype=np.int64)
    by_checkout = np.argsort(s.start_s[paying] + s.checkout_s[paying], kind="stable")
    order_no[paying[by_checkout]] = np.arange(1, paying.size + 1)
    order_ids = np.array([f"S{n:06d}" for n in order_no[buy_session]], dtype=object)

    n_view, n_cart, n_buy = view_item.size, cart.size, buy.size
    session = np.concatenate([s.view_session, cart_session, buy_session])
    seconds = np.concatenate([view_ts, cart_ts, s.start_s[buy_session] + s.checkout_s[buy_session]])
    rank = np.concatenate([2 * s.view_rank, 2 * s.view_rank[cart] + 1, 2 * s.view_rank[cart][buy]])
    order = np.lexsort((rank, session, seconds))

    item = np.concatenate([view_item, cart_item, cart_item[buy]])[order]
    kind = np.repeat(np.arange(3), [n_view, n_cart, n_buy])[order]
    quantity = np.concatenate([np.ones(n_view, dtype=np.int64), cart_qty, cart_qty[buy]])[order]
    order_id = np.full(session.size, None, dtype=object)
    order_id[n_view + n_cart :] = order_ids
    session = session[order]

    base = np.datetime64(config.start, "s")
    ts = (base + seconds[order].astype("timedelta64[s]")).astype("datetime64[ns]")
    categories = np.array(world.categories, dtype=object)
    descriptions = np.array(
        [f"{categories[k]} item {i + 1}" for i, k in enumerate(world.item_category)], dtype=object
    )
    countries = np.array([name for name, _ in config.countries], dtype=object)
    devices = np.array([name for name, _ in config.devices], dtype=object)
    return pd.DataFrame(
        {
            c.EVENT_TS: ts,
            c.USER_ID: _text(world.user_ids[s.user[session]]),
            c.ITEM_ID: _text(world.item_ids[item]),
            c.EVENT_TYPE: _text(np.array(c.EVENT_TYPES, dtype=object)[kind]),
            c.QUANTITY: quantity.astype(np.int64),
            c.UNIT_PRICE: world.item_price[item].astype(np.float64),
            c.ORDER_ID: _text(order_id[order]),
            c.DESCRIPTION: _text(descriptions[item]),
            c.COUNTRY: _text(countries[s.country[session]]),
            c.DEVICE: _text(devices[s.device[session]]),
        },
        columns=list(EVENT_COLUMNS),
    )


def _text(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
    return pd.array(values, dtype="string")


def _empty_events() -> pd.DataFrame:
    columns: dict[str, Any] = {col: _text(np.array([], dtype=object)) for col in EVENT_COLUMNS}
    columns[c.EVENT_TS] = np.array([], dtype="datetime64[ns]")
    columns[c.QUANTITY] = np.array([], dtype=np.int64)
    columns[c.UNIT_PRICE] = np.array([], dtype=np.float64)
    return pd.DataFrame(columns, columns=list(EVENT_COLUMNS))


# --- Settings parsing -----------------------------------------------------------------------

_Knob = TypeVar("_Knob", PreferenceShift, SeasonalBoost, NewItems)
_KNOB_FIELDS: dict[type, str] = {
    PreferenceShift: "preference_shifts",
    SeasonalBoost: "seasonal_boosts",
    NewItems: "new_items",
}


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalising fields of a frozen dataclass


def _as_int(value: object, name: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if low is not None and number < low:
        raise ValueError(f"{name} must be at least {low}, got {value!r}")
    return int(number)


def _as_float(
    value: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (number < low or (low_open and number == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and number > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return number


def _as_date(value: object, name: str) -> date:
    if isinstance(value, datetime):  # also pandas.Timestamp
        if value.time() != time(0):
            raise ValueError(f"{name} must be a date, got {value!r} with a time of day")
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{name} must be an ISO date like 2024-01-01, got {value!r}")


def _as_name(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty name, got {value!r}")
    return value


def _as_names(value: object, name: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not items:
        raise ValueError(f"{name} must be a non-empty list of names, got {value!r}")
    return tuple(_as_name(item, name) for item in items)


def _as_weighted(value: object, name: str) -> tuple[tuple[str, float], ...]:
    """``{name: weight}`` or ``[[name, weight], ...]`` as a tuple of pairs."""
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, Sequence) and not isinstance(value, str):
        pairs = []
        for entry in value:
            if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 2:
                raise ValueError(f"{name}: each entry must be [name, weight], got {entry!r}")
            pairs.append((entry[0], entry[1]))
    else:
        raise ValueError(f"{name} must map names to weights, got {value!r}")
    out = tuple(
        (_as_name(key, name), _as_float(weight, f"{name}[{key!r}]", low=0.0))
        for key, weight in pairs
    )
    if not out or sum(weight for _, weight in out) <= 0:
        raise ValueError(f"{name} needs at least one positive weight, got {value!r}")
    if len({key for key, _ in out}) != len(out):
        raise ValueError(f"{name} lists a name twice: {value!r}")
    return out


def _as_price_range(value: object) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"price_range must be [low, high], got {value!r}")
    low = _as_float(value[0], "price_range low", low=0.01)
    high = _as_float(value[1], "price_range high", low=low)
    return (low, high)


def _as_knobs(value: object, cls: type[_Knob]) -> tuple[_Knob, ...]:
    name = _KNOB_FIELDS[cls]
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"{name} must be a list, got {value!r}")
    out: list[_Knob] = []
    for i, entry in enumerate(value):
        where = f"{name}[{i}]"
        if isinstance(entry, cls):
            out.append(entry)
        elif isinstance(entry, Mapping):
            _check_keys(entry, cls, where)
            try:
                out.append(cls(**dict(entry)))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        else:
            raise ValueError(f"{where} must be a mapping of settings, got {entry!r}")
    return tuple(out)


def _check_keys(d: Mapping[str, Any], cls: type, where: str) -> None:
    known = [f.name for f in fields(cls)]
    unknown = [key for key in d if key not in known]
    if unknown:
        listed = ", ".join(repr(key) for key in unknown)
        raise ValueError(f"unknown setting {listed} in {where}; known settings: {known}")
    required = [
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    ]
    missing = [key for key in required if key not in d]
    if missing:
        raise ValueError(f"{where}: missing required setting(s) {missing}")


def _check_category(name: str, known: tuple[str, ...], where: str) -> None:
    if name not in known:
        raise ValueError(f"{where}: unknown category {name!r}; known: {list(known)}")


def _plain(value: object) -> object:
    if isinstance(value, date):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
