"""Which baseline judges which (model, version), and which records are turned away.

A :class:`ModelBaselines` is the engine's mapping from a record's model key (the model name,
or ``model\\x1fversion`` with ``[message] model_version``; see
:func:`streamskew.records.identity_key`) to the baseline its panes are summarized against.
It is a ``Mapping[str, Baseline]`` (its keys: ``default``, the models, the model/version
keys it has baselines for), so everything that took a plain mapping still works.

Resolution of a key (model ``m``, version ``v``), at pane ``i``:

1. ``v``'s own baseline (``[models.m] versions``, or :meth:`ModelBaselines.set_baseline`);
2. else the model's baseline for all its versions (``[models.m] baseline``);
3. else, when the model's fallback is ``latest``, its most recently added version baseline;
4. else, for a model with no entry at all, the ``default`` baseline (one baseline for
   every model: ``--baseline``);
5. else nothing: the record is dead-lettered ``unknown_model`` (no entry for the model)
   or ``unknown_version`` (the model is known, this version is not).

State stays bounded whatever the input: at most ``max_models`` model names are admitted
to the ``default`` baseline and at most ``max_versions`` versions per model to a baseline
that is not their own (steps 2-4); later names are dead-lettered like unknown ones. Names
turned away are not remembered: only their counts per reason and a fixed-size table of the
most frequent (:class:`TopNames`, for logs and stats).

A baseline set with :meth:`~ModelBaselines.set_baseline` applies from a given pane on
(``from_pane``): every builder and evaluator that asks for pane ``i`` gets the same answer,
so partial panes of one pane always share their bins.

>>> import random
>>> from streamskew import Baseline
>>> rng = random.Random(0)
>>> b = Baseline.from_columns({"x": [rng.gauss(0, 1) for _ in range(500)]})
>>> models = ModelBaselines({"fraud": b}, versioned=True, fallback="latest")
>>> models.admit("fraud\\x1f3")[0] is b, models.admit("spam\\x1f1")[1]
(True, 'unknown_model')
>>> models.unknown.most_common()
[('spam', 1)]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ..baseline import Baseline
from ..config import Config, ConfigError
from ..records import Reason, identity_key, split_identity

__all__ = ["DEFAULT_MODEL", "ModelBaselines", "TopNames"]

DEFAULT_MODEL = "default"
TOP_NAMES = 16  # unknown names remembered (the most frequent), whatever the input
EARLIEST = -(2**62)  # from_pane of baselines given at start: every pane
LATEST = 2**62  # "at the newest pane": what is registered now


class TopNames:
    """The most frequent names among those counted, in fixed memory (Space-Saving, Metwally
    et al. 2005): ``size`` slots; a new name takes the smallest slot's place and count + 1,
    so any name seen more than ``total / size`` times is in the table, and each count
    overestimates by at most the smallest count.

    >>> top = TopNames(2)
    >>> for name in ["a", "b", "a", "c", "a"]:
    ...     top.add(name)
    >>> top.most_common()[0], top.total
    (('a', 3), 5)
    """

    def __init__(self, size: int = TOP_NAMES) -> None:
        self.size = size
        self.counts: dict[str, int] = {}
        self.total = 0

    def add(self, name: str, count: int = 1) -> None:
        self.total += count
        if name in self.counts:
            self.counts[name] += count
        elif len(self.counts) < self.size:
            self.counts[name] = count
        else:
            smallest = min(self.counts, key=self.counts.__getitem__)
            self.counts[name] = self.counts.pop(smallest) + count

    def most_common(self) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass
class _Entry:
    version: str | None  # None: every version of the model (or: versions not configured)
    baseline: Baseline
    from_pane: int
    seq: int  # order added: "latest" is the highest


@dataclass
class _Model:
    entries: list[_Entry] = field(default_factory=list)
    fallback: str = "none"
    admitted: dict[str, None] = field(default_factory=dict)  # versions on a shared baseline


class ModelBaselines(Mapping[str, Baseline]):
    """The baselines of a deployment, per model and version (see the module docs)."""

    def __init__(self, baselines: Baseline | Mapping[str, Baseline], *,
                 versioned: bool = False, fallback: str = "none",
                 fallbacks: Mapping[str, str] | None = None,
                 versions: Mapping[str, Mapping[str, Baseline]] | None = None,
                 max_models: int = 100, max_versions: int = 10) -> None:
        if isinstance(baselines, Baseline):
            baselines = {DEFAULT_MODEL: baselines}
        self.versioned = versioned
        self.max_models = max_models
        self.max_versions = max_versions
        self.default_fallback = fallback
        self.revision = 0  # bumped by set_baseline: builders refresh their decoders
        self._seq = 0
        self._models: dict[str, _Model] = {}
        self._default: list[_Entry] = []
        self._admitted: dict[str, None] = {}  # models judged against the default baseline
        self._default_versions: dict[str, dict[str, None]] = {}  # ... and their versions
        self.unknown = TopNames()  # the most frequent names turned away (model or key)
        for name, baseline in baselines.items():
            model, version = split_identity(name) if versioned else (name, None)
            self._add(model, version, baseline, EARLIEST)
        for model, table in (versions or {}).items():
            for version, baseline in table.items():
                self._add(model, version, baseline, EARLIEST)
        for model, mode in (fallbacks or {}).items():
            self._model(model).fallback = mode
        if not self._default and not self._models:
            raise ValueError("no baseline: give at least one")

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config, default: Baseline | None = None,
                    loaded: Mapping[str, Baseline] | None = None) -> ModelBaselines:
        """The baselines ``[models.<name>]`` names (files read with :meth:`Baseline.load`,
        each once), plus ``default`` for every other model when given."""
        cache: dict[str, Baseline] = dict(loaded or {})

        def load(path: str) -> Baseline:
            if path not in cache:
                cache[path] = Baseline.load(path)
            return cache[path]

        models: dict[str, Baseline] = {} if default is None else {DEFAULT_MODEL: default}
        versions: dict[str, dict[str, Baseline]] = {}
        fallbacks: dict[str, str] = {}
        for name, entry in config.models.entries.items():
            if entry.baseline is not None:
                models[identity_key(name, None)] = load(entry.baseline)
            if entry.versions:
                if config.message.model_version is None:
                    raise ConfigError(f"{config.source}: [models.{name}] versions: set "
                                      "[message] model_version (the path of the version in "
                                      "a message) to judge versions apart")
                versions[name] = {v: load(path) for v, path in entry.versions.items()}
            fallbacks[name] = entry.fallback or config.models.fallback
        if not models and not versions:
            raise ConfigError(f"{config.source}: no baseline: pass --baseline, set `baseline`, "
                              "or add [models.<name>] sections with baseline = \"<file>\"")
        return cls(models, versioned=config.message.model_version is not None,
                   fallback=config.models.fallback, fallbacks=fallbacks, versions=versions,
                   max_models=config.models.max_models, max_versions=config.models.max_versions)

    def _model(self, model: str) -> _Model:
        state = self._models.get(model)
        if state is None:
            state = self._models[model] = _Model(fallback=self.default_fallback)
        return state

    def _add(self, model: str, version: str | None, baseline: Baseline, from_pane: int) -> None:
        self._seq += 1
        entry = _Entry(version, baseline, from_pane, self._seq)
        if model == DEFAULT_MODEL and version is None:
            self._default.append(entry)
        else:
            self._model(model).entries.append(entry)

    def set_baseline(self, model: str, version: str | None, baseline: Baseline,
                     from_pane: int = EARLIEST) -> None:
        """Add or replace the baseline of ``model`` (``version`` None: every version of it;
        ``model = "default"``: every model without one), for panes ``from_pane`` on.

        Earlier panes keep the baseline they were summarized against. Entries that can no
        longer be chosen (replaced for every pane) are dropped, so memory stays bounded."""
        if version is not None and not self.versioned:
            raise ValueError("a version's baseline needs [message] model_version")
        self._add(model, version, baseline, from_pane)
        entries = self._default if model == DEFAULT_MODEL and version is None \
            else self._models[model].entries
        same = [e for e in entries if e.version == version]
        # Keep the newest entry that covers the earliest panes, and every later one.
        same.sort(key=lambda e: (e.from_pane, e.seq))
        keep: list[_Entry] = []
        for entry in same:
            while keep and keep[-1].from_pane == entry.from_pane:
                keep.pop()
            keep.append(entry)
        entries[:] = [e for e in entries if e.version != version] + keep
        self.revision += 1

    # -- resolving ---------------------------------------------------------------------------

    @classmethod
    def of(cls, baselines: Baseline | Mapping[str, Baseline], config: Config
           ) -> ModelBaselines:
        """``baselines`` as they are when already a ModelBaselines, else wrapped with the
        config's ``[models]`` settings (versions, fallbacks, bounds)."""
        if isinstance(baselines, ModelBaselines):
            return baselines
        models = config.models
        return cls(baselines, versioned=config.message.model_version is not None,
                   fallback=models.fallback,
                   fallbacks={name: entry.fallback or models.fallback
                              for name, entry in models.entries.items()},
                   max_models=models.max_models, max_versions=models.max_versions)

    def at(self, key: str, pane: int) -> Baseline | None:
        """The baseline of ``key``'s pane ``pane`` (no admission: see :meth:`admit`); a
        key whose baselines all start later gets the earliest of them."""
        baseline, _ = self._resolve(key, pane)
        if baseline is None:
            baseline, _ = self._resolve(key, LATEST)
        return baseline

    def _resolve(self, key: str, pane: int) -> tuple[Baseline | None, str]:
        """(baseline, how): how is ``own``, ``model``, ``latest``, ``default`` or the
        reason it has none."""
        model, version = split_identity(key) if self.versioned else (key, None)
        state = self._models.get(model)
        if state is not None:
            own = _newest(state.entries, pane, lambda e: e.version == version)
            if own is not None:
                return own, "own"
            shared = _newest(state.entries, pane, lambda e: e.version is None)
            if shared is not None:
                return shared, "model"
            if state.fallback == "latest":
                latest = _latest(state.entries, pane)
                if latest is not None:
                    return latest, "latest"
            return None, Reason.UNKNOWN_VERSION
        default = _newest(self._default, pane, lambda e: True)
        if default is not None:
            return default, "default"
        return None, Reason.UNKNOWN_MODEL

    def admit(self, key: str, count: int = 1) -> tuple[Baseline | None, str, str]:
        """``(baseline, "", "")`` when ``key``'s records are judged, else ``(None, reason,
        detail)``: the reason (``unknown_model``, ``unknown_version``) and one sentence with
        the fix. Names turned away are counted (``count`` records) in :attr:`unknown`, never
        stored otherwise."""
        baseline, how = self._resolve(key, LATEST)
        model, version = split_identity(key) if self.versioned else (key, None)
        shown = model if version is None else f"{model} version {version!r}"
        if baseline is None:
            self.unknown.add(model if how == Reason.UNKNOWN_MODEL or version is None
                             else f"{model}/{version}", count)
            if how == Reason.UNKNOWN_MODEL:
                return None, how, (f"no baseline for model {model!r}: add [models.{model}] "
                                   "with its baseline (or pass --baseline for every model), "
                                   "or check [message] model")
            return None, how, (f"no baseline for {shown}: add it to [models.{model}] "
                               "versions, or set fallback = \"latest\" to judge it against "
                               "the model's latest baseline")
        if how == "own":
            return baseline, "", ""
        if how == "default" and model not in self._admitted:
            if len(self._admitted) >= self.max_models:
                self.unknown.add(model, count)
                return None, Reason.UNKNOWN_MODEL, (
                    f"model {model!r} is past [models] max_models ({self.max_models}) "
                    "distinct models judged against the default baseline: give it a "
                    "[models.<name>] section, or raise max_models")
            self._admitted[model] = None
        if version is not None:
            admitted = self._models[model].admitted if model in self._models \
                else self._default_versions.setdefault(model, {})
            if version not in admitted:
                if len(admitted) >= self.max_versions:
                    self.unknown.add(f"{model}/{version}", count)
                    return None, Reason.UNKNOWN_VERSION, (
                        f"{shown} is past [models] max_versions ({self.max_versions}) "
                        "versions judged against a baseline that is not their own: add "
                        f"its baseline to [models.{model}] versions, or raise max_versions")
                admitted[version] = None
        return baseline, "", ""

    def own(self, model: str, version: str | None) -> Baseline | None:
        """The newest baseline set for exactly ``model`` at ``version`` (None: every
        version; no fallback), or None."""
        if model == DEFAULT_MODEL and version is None:
            entries = self._default
        else:
            state = self._models.get(model)
            entries = state.entries if state is not None else []
        return _newest(entries, LATEST, lambda e: e.version == version)

    def models(self) -> list[str]:
        """The model names with baselines of their own (``default`` not included)."""
        return sorted(self._models)

    def describe(self) -> list[tuple[str, str | None, Baseline]]:
        """``(model, version, baseline)`` of every current entry (version None: every
        version), for ``baseline show`` and logs."""
        rows = [(DEFAULT_MODEL, None, e.baseline) for e in self._default]
        for model, state in sorted(self._models.items()):
            rows.extend((model, e.version, e.baseline) for e in state.entries)
        return rows

    # -- Mapping[str, Baseline] ----------------------------------------------------------------

    def _keys(self) -> dict[str, Baseline]:
        keys: dict[str, Baseline] = {}
        for entry in self._default:
            keys[DEFAULT_MODEL] = entry.baseline
        for model, state in self._models.items():
            for entry in state.entries:
                keys[identity_key(model, entry.version)] = entry.baseline
        return keys

    def __getitem__(self, key: str) -> Baseline:
        found = self._keys().get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


def _newest(entries: list[_Entry], pane: int, wanted: object) -> Baseline | None:
    best: _Entry | None = None
    for entry in entries:
        if entry.from_pane <= pane and wanted(entry) and (  # type: ignore[operator]
                best is None or (entry.from_pane, entry.seq) > (best.from_pane, best.seq)):
            best = entry
    return None if best is None else best.baseline


def _latest(entries: list[_Entry], pane: int) -> Baseline | None:
    """The model's most recently added version baseline in force at ``pane``."""
    candidates = [e for e in entries if e.version is not None and e.from_pane <= pane]
    return max(candidates, key=lambda e: e.seq).baseline if candidates else None
