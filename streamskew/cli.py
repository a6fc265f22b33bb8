"""The ``streamskew`` command.

Exit codes (README, "Exit codes"): 0 judged the input; 1 an error (one ``Error: ...`` line
that says what to do; ``--debug`` adds the traceback); 2 a wrong command line; 3 judged
nothing, or most records were not used (late, out of range, rejected); 4 the baseline does
not look like it belongs to the input.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import click
from click.core import ParameterSource

from . import logs
from .baseline import Baseline
from .config import Config, check_feature_overrides
from .detector import DetectorStats, SkewEvent
from .detector.models import DEFAULT_MODEL, ModelBaselines
from .errors import StreamskewError
from .records import identity_key
from .verdict import (
    EXIT_BLIND,
    EXIT_ERROR,
    EXIT_MISMATCH,
    EXIT_PIPE_CLOSED,
    RunCounts,
    WindowWatch,
    blind_run,
    coverage_problem,
)

__all__ = ["main"]

#: Optional parts: the module that is missing -> (the extra, what needs it).
EXTRAS = {"prometheus_client": ("metrics", "--metrics-port"), "jinja2": ("report", "--report"),
          "pyarrow": ("parquet", "reading Parquet")}


class _Problem(click.ClickException):
    """A user-facing error: printed as ``Error: <one line>``, exit code 1 unless told."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(" ".join(str(message).split("\n")))
        self.exit_code = exit_code

    def format_message(self) -> str:
        return self.message


def _silence_stdout() -> None:
    """Python would complain at exit that it cannot flush stdout: point it at /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (tests)
        pass


def _extra_needed(extra: str, what: str) -> str:
    return f"{what} needs the {extra} extra: pip install 'streamskew[{extra}]'"


def _require(module: str) -> None:
    """Fail at once, not after a long run, when an optional part is not installed."""
    if importlib.util.find_spec(module) is None:
        extra, what = EXTRAS[module]
        raise _Problem(_extra_needed(extra, what))


class _Main(click.Group):
    """The root command: one line for every failure, tracebacks only with --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        _apply_logging(ctx)
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # the reader of our output left (`| head`): end quietly
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_PIPE_CLOSED) from None
        except StreamskewError as exc:
            raise self._fail(ctx, str(exc)) from None
        except ImportError as exc:
            extra = EXTRAS.get((exc.name or "").split(".")[0])
            if extra is None:
                raise self._fail(ctx, f"unexpected ImportError: {exc}; run with --debug for "
                                      "the traceback") from None
            raise self._fail(ctx, _extra_needed(*extra)) from None
        except Exception as exc:  # kafka-python's errors derive from Exception
            kind = type(exc).__name__
            text = str(exc).removeprefix(f"{kind}: ")  # kafka-python repeats its class name
            raise self._fail(ctx, f"unexpected {kind}: {text}; run with --debug for the "
                                  "traceback") from None

    @staticmethod
    def _fail(ctx: click.Context, message: str) -> _Problem:
        if ctx.meta.get("streamskew.debug"):
            traceback.print_exc(file=sys.stderr)
        return _Problem(message)


# -- options every command has -----------------------------------------------------------------

_LOG_KEYS = ("verbose", "quiet", "log_level", "log_format", "debug")


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Option callbacks: the root context keeps what was given (group or command level)."""
    root = ctx.find_root()
    options = root.meta.setdefault("streamskew.logging", {})
    given = ctx.get_parameter_source(param.name or "") not in (ParameterSource.DEFAULT, None)
    if given or param.name not in options:
        options[param.name] = value
    if param.name == "debug" and value:
        root.meta["streamskew.debug"] = True
    _apply_logging(root)
    return value


def _apply_logging(ctx: click.Context) -> None:
    options = ctx.find_root().meta.get("streamskew.logging", {})
    logs.configure(logs.level_from(options.get("verbose", 0), options.get("quiet", 0),
                                   options.get("log_level")),
                   options.get("log_format") or "text", debug=bool(options.get("debug")))


def _common_params() -> list[click.Option]:
    kwargs: dict[str, Any] = {"expose_value": False, "callback": _remember}
    return [
        click.Option(["-v", "--verbose"], count=True, help="More log lines (-v: debug).",
                     **kwargs),
        click.Option(["-q", "--quiet"], count=True,
                     help="Fewer log lines (-q: warnings and errors, -qq: errors).", **kwargs),
        click.Option(["--log-level"], type=click.Choice(logs.LEVELS, case_sensitive=False),
                     help="Log level (default: info); overrides -v/-q.", **kwargs),
        click.Option(["--log-format"], type=click.Choice(logs.FORMATS),
                     help="text (default) or json: one JSON object per line.", **kwargs),
        click.Option(["--debug"], is_flag=True,
                     help="Tracebacks on errors, and other libraries' log lines.", **kwargs),
    ]


def _add_common_params(command: click.Command) -> None:
    names = {p.name for p in command.params}
    command.params.extend(p for p in _common_params() if p.name not in names)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_common_params(sub)


def _load_config(path: str | None) -> Config:
    return Config() if path is None else Config.from_toml(path)


def _load_baseline(path: str | None, config: Config) -> Baseline | ModelBaselines:
    """The baseline(s) of a run. With ``[models.<name>]`` sections each named model is
    judged against its own files, and ``--baseline`` (or ``baseline``), when given, judges
    every other model (up to ``[models] max_models``); without them, the one baseline
    judges every model, as always."""
    path = path or config.baseline
    if config.models.entries:
        default = Baseline.load(path) if path else None
        models = ModelBaselines.from_config(config, default)
        for name, _version, baseline in models.describe():
            own = config.for_model(name) if name != DEFAULT_MODEL else config
            check_feature_overrides(own, baseline.features,
                                    f"the baseline {baseline.id} of model {name}")
        return models
    if not path:
        raise click.UsageError("no baseline: pass --baseline, set `baseline` in the config, "
                               "or add [models.<name>] sections with their baselines")
    baseline = Baseline.load(path)
    check_feature_overrides(config, baseline.features, _baseline_label(path, baseline))
    return baseline


def _kafka_baselines(path: str | None, config: Config, bootstrap: str | None
                     ) -> Baseline | ModelBaselines:
    """The baselines of `run` and `replay`: files as for `detect`, or, when no file is
    named anywhere, what the registry on Kafka holds (``baseline publish``)."""
    if path or config.baseline or config.models.entries:
        return _load_baseline(path, config)
    from .kafka.registry import BaselineRegistry

    registry = BaselineRegistry(config.kafka, bootstrap)
    entries = registry.entries()
    versioned = config.message.model_version is not None
    usable = {identity_key(e.model, e.version or None): e.baseline
              for e in entries.values() if versioned or not e.version}
    if not usable:
        more = f" ({len(entries)} registered for versions, but [message] model_version is " \
               "not set)" if entries else ""
        raise click.UsageError(f"no baseline: pass --baseline, set `baseline` in the config, "
                               f"add [models.<name>] sections, or publish one to "
                               f"{registry.topic} with `streamskew baseline publish BASELINE "
                               f"--model M`{more}")
    return ModelBaselines(usable, versioned=versioned, fallback=config.models.fallback,
                          max_models=config.models.max_models,
                          max_versions=config.models.max_versions)


def _any_baseline(baselines: Baseline | ModelBaselines) -> Baseline:
    """One baseline to stand for all (labels, the report's fallback track)."""
    if isinstance(baselines, Baseline):
        return baselines
    return next(iter(baselines.values()))


def _baseline_label(path: str | None, baseline: Baseline | ModelBaselines) -> str:
    if isinstance(baseline, ModelBaselines):
        return f"the baselines of [models] ({', '.join(baseline.models()) or 'default'})"
    return f"the baseline {path or baseline.id}"


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="streamskew")
def main() -> None:
    """Catch training-serving skew: compare serving data with a baseline of training data.

    Exit codes: 0 judged the input, 1 error, 2 wrong command line, 3 judged nothing (or most
    records were not used), 4 the baseline does not fit the input.
    """


# -- baseline ----------------------------------------------------------------------------------


@main.group()
def baseline() -> None:
    """Build or inspect a baseline (the training data's per-feature summary)."""


@baseline.command("build")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config (message paths, feature kinds, [build] settings).")
@click.option("--input", "inputs", multiple=True,
              help="Training data: CSV (header row), JSONL or Parquet, gzip allowed, - for "
              "stdin; several allowed (also as arguments).")
@click.argument("more_inputs", nargs=-1)
@click.option("--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the baseline file (JSON).")
@click.option("--label", "label", metavar="COL",
              help="Column of the true label (a validation set): also store the model's "
              "validation performance, for performance skew ([labels]).")
@click.option("--prediction", "prediction", metavar="COL",
              help="With --label: the column of the model's output (a score in [0, 1], the "
              "class, or the predicted value); default: [message] prediction's name.")
def baseline_build(config_path: str | None, inputs: tuple[str, ...],
                   more_inputs: tuple[str, ...], output: str, label: str | None,
                   prediction: str | None) -> None:
    """Build a baseline: streamskew baseline build --input train.csv --output baseline.json"""
    config = _load_config(config_path)
    paths = [*inputs, *more_inputs]
    if not paths:
        raise click.UsageError("no input: pass --input FILE (or FILE arguments; - for stdin)")
    if prediction and not label:
        raise click.UsageError("--prediction needs --label (the true label's column)")
    built = Baseline.build(paths, config, progress=sys.stderr.isatty(), label=label,
                           prediction=prediction)
    built.save(output)
    click.echo(built.describe(), err=True)
    if built.skipped is not None and built.skipped.total:
        click.echo(f"skipped {built.skipped.total} unreadable lines: {built.skipped.counts}; "
                   f"e.g. {'; '.join(built.skipped.examples)}", err=True)
    click.echo(f"wrote {output}", err=True)


@baseline.command("show")
@click.argument("path", type=click.Path(dir_okay=False), required=False)
@click.option("--check-input", "check_inputs", multiple=True,
              help="Also say whether this input (training data or JSONL messages; - for "
              "stdin) fits the baseline: which of its features it carries (first rows).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config ([message] paths for --check-input).")
def baseline_show(path: str | None, check_inputs: tuple[str, ...], config_path: str | None
                  ) -> None:
    """Print a readable per-feature summary of a baseline file; without PATH, of every
    model's and version's baseline in the config's [models] sections."""
    config = _load_config(config_path)
    if path is None:
        if not config.models.entries:
            raise click.UsageError("no baseline: give PATH, or --config with [models.<name>] "
                                   "sections")
        models = ModelBaselines.from_config(config)
        for name, version, each in models.describe():
            entry = config.models.entries.get(name)
            file = entry.baseline if version is None else entry.versions[version] \
                if entry is not None else None
            which = "every version" if version is None else f"version {version}"
            click.echo(f"== model {name}, {which}: {file}")
            click.echo(each.describe())
            if check_inputs:
                _check_input_fits(each, str(file), check_inputs, config)
        return
    loaded = Baseline.load(path)
    click.echo(loaded.describe())
    if check_inputs:
        _check_input_fits(loaded, path, check_inputs, config)


CHECK_ROWS = 10_000


def _check_input_fits(baseline: Baseline, path: str, names: tuple[str, ...],
                      config: Config) -> None:
    """Compare the columns of the inputs' first rows with the baseline's features."""
    from .baseline.build import MISSING_TOKENS
    from .inputs import resolve_inputs
    from .readers import SkippedLines, read_chunks
    from .verdict import Coverage

    seen: dict[str, None] = {}
    for source in resolve_inputs(names):
        chunk = next(iter(read_chunks(source, config.message, CHECK_ROWS, SkippedLines())), {})
        for column, values in chunk.items():
            if any(v is not None and not (isinstance(v, str) and v in MISSING_TOKENS)
                   for v in values):
                seen.setdefault(column, None)
    features = tuple(baseline.features)
    coverage = Coverage(features, tuple(f for f in features if f in seen),
                        tuple(c for c in seen if c not in baseline.features))
    click.echo(f"\ninput {', '.join(names)}: {len(coverage.present)} of {len(features)} "
               f"baseline features present; {len(coverage.unknown)} columns unknown to the "
               f"baseline{': ' + ', '.join(coverage.unknown) if coverage.unknown else ''}")
    problem = coverage_problem(coverage, _baseline_label(path, baseline))
    if problem is not None:
        raise _Problem(problem, EXIT_MISMATCH)
    click.echo("the baseline fits this input")


# -- the baseline registry (Kafka) -----------------------------------------------------------


def _registry_options(command: Any) -> Any:
    for option in reversed([
        click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
                     help="TOML config with a [kafka] section (its baselines_topic)."),
        click.option("--bootstrap-servers", help="Overrides [kafka] bootstrap_servers."),
    ]):
        command = option(command)
    return command


@baseline.command("publish")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--model", required=True, help="The model this baseline is for.")
@click.option("--version", "version", default="", help="The model version (default: every "
              "version of the model without a baseline of its own).")
@click.option("--from", "start", help="Event time it applies from: ISO-8601, epoch ms or "
              "relative (-2h) [default: the start of the second pane after now].")
@_registry_options
def baseline_publish(path: str, model: str, version: str, start: str | None,
                     config_path: str, bootstrap_servers: str | None) -> None:
    """Register a baseline on Kafka: running services judge that model and version against
    it from the pane that holds --from on, without a restart."""
    from .kafka.registry import BaselineRegistry
    from .timeparse import format_time, parse_time

    config = _load_config(config_path)
    loaded = Baseline.load(path)
    try:
        from_time = parse_time(start) if start is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--from") from None
    if from_time is None:
        # From the start of the second pane after now: every replica has read the entry by
        # then (they poll the registry at each checkpoint), so all switch at that pane.
        pane = config.window.pane_ms
        from_time = (int(time.time() * 1000) // pane + 2) * pane
    registry = BaselineRegistry(config.kafka, bootstrap_servers)
    entry = registry.publish(loaded, model, version, from_time)
    click.echo(f"published {path} (baseline {loaded.id}, {len(loaded.features)} features) as "
               f"model {model!r} version {version or '(any)'!r} in {registry.topic} "
               f"({entry.parts} part{'s' if entry.parts != 1 else ''}, "
               f"{entry.size / 1024:.1f} KiB), applying from {format_time(entry.from_time)}")


@baseline.command("list")
@_registry_options
def baseline_list(config_path: str, bootstrap_servers: str | None) -> None:
    """Show the baselines registered on Kafka, by model and version."""
    from .kafka.registry import BaselineRegistry

    config = _load_config(config_path)
    registry = BaselineRegistry(config.kafka, bootstrap_servers)
    entries = registry.entries()
    if not entries:
        click.echo(f"no baselines registered in {registry.topic}; add one with `streamskew "
                   "baseline publish BASELINE --model M [--version V]`", err=True)
        return
    click.echo(f"{'model':<24} {'version':<12} {'baseline':<16}  features, rows, size")
    for _, entry in sorted(entries.items()):
        click.echo(entry.describe())


@baseline.command("retire")
@click.option("--model", required=True, help="The registered model.")
@click.option("--version", "version", default="", help="Its version ('' by default).")
@_registry_options
def baseline_retire(model: str, version: str, config_path: str,
                    bootstrap_servers: str | None) -> None:
    """Remove a baseline from the registry on Kafka."""
    from .kafka.registry import BaselineRegistry

    config = _load_config(config_path)
    registry = BaselineRegistry(config.kafka, bootstrap_servers)
    entry = registry.retire(model, version)
    click.echo(f"retired model {model!r} version {version or '(any)'!r} "
               f"(baseline {entry.baseline.id}) from {registry.topic}")


# -- detect ------------------------------------------------------------------------------------


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config; defaults apply when omitted.")
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False),
              help="Baseline file (default: `baseline` in the config).")
@click.option("--input", "inputs", multiple=True,
              help="JSONL of prediction-request messages, gzip allowed, - for stdin; several "
              "allowed (also as arguments), read one after another in time order.")
@click.argument("more_inputs", nargs=-1)
@click.option("--output", type=click.Path(dir_okay=False),
              help="Write events here (default: stdout).")
@click.option("--format", "out_format", type=click.Choice(["json", "table"]), default="json",
              show_default=True, help="Events as JSON lines, or one aligned line each.")
@click.option("--dead-letter", type=click.Path(dir_okay=False),
              help="Write bad lines here, each with its reason, input and line number.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write an HTML report here.")
@click.option("--labels", "labels", multiple=True, metavar="FILE",
              help="JSONL of label records (request id, label, label time: [labels]), "
              "joined to the requests for performance skew; needs a baseline built with "
              "--label. Several allowed, in time order.")
def detect(config_path: str | None, baseline_path: str | None, inputs: tuple[str, ...],
           more_inputs: tuple[str, ...], output: str | None, out_format: str,
           dead_letter: str | None, report: str | None, labels: tuple[str, ...]) -> None:
    """Compare files of logged requests with the baseline; print skew events."""
    from .files import detect_file
    from .inputs import resolve_inputs
    from .report.collect import ReportCollector

    names = [*inputs, *more_inputs]
    if not names:
        raise click.UsageError("no input: pass --input FILE (or FILE arguments; - for stdin)")
    config = _load_config(config_path)
    baseline = _load_baseline(baseline_path, config)
    sources = resolve_inputs(names)  # fails before anything is written
    if labels:
        resolve_inputs(labels)
        if _any_baseline(baseline).performance is None:
            raise _Problem(f"--labels: the baseline {baseline_path or config.baseline} has no "
                           "reference performance; rebuild it on the validation set with "
                           "`streamskew baseline build --label COL [--prediction COL]`")
    if report:
        _require("jinja2")
    collector = ReportCollector(_any_baseline(baseline)) if report else None
    watch = WindowWatch(collector.on_window if collector else None,
                        _baseline_label(baseline_path or config.baseline, baseline),
                        announce=False)
    with ExitStack() as stack:
        write_event = _event_sink(stack, config, None, output, publish=False,
                                  table=out_format == "table")
        dead: IO[bytes] | None = stack.enter_context(open(dead_letter, "wb")) \
            if dead_letter else None
        run = detect_file(config, baseline, [s.name for s in sources], on_event=write_event,
                          dead_letters=dead, on_window=watch.on_window,
                          on_bad_record=collector.on_bad_record if collector else None,
                          progress=sys.stderr.isatty(), labels=labels,
                          on_performance_window=collector.on_performance_window
                          if collector else None)
    watch.finish()
    stats = run.detector.stats
    click.echo(stats.summary(), err=True)
    source = ", ".join(s.label for s in sources)
    blind = _verdict(RunCounts.of(stats, watch=watch), config, "detect", source)
    if len(run.inputs) > 1 and stats.late:
        late = [f"{c.source}: {c.late:,} of {c.records:,}" for c in run.inputs if c.late]
        click.echo(f"late records by input: {'; '.join(late)}", err=True)
    if collector is not None:
        _report(collector, report, stats, run.events, f"detect: {source}",
                baseline_path or config.baseline, blind)
    _finish(blind, watch)


def _verdict(counts: RunCounts, config: Config, what: str, source: str) -> str | None:
    return blind_run(counts, what, min_count=config.detect.min_count,
                     allowed_lateness=config.window.allowed_lateness, source=source)


def _finish(blind: str | None, watch: WindowWatch | None) -> None:
    """Say what the run could not judge, and exit with its code."""
    mismatch = [problem if model == "default" else f"model {model}: {problem}"
                for model, problem in (watch.problems.items() if watch is not None else ())]
    for problem in mismatch:
        click.echo(f"Error: {problem}", err=True)
    if blind is not None:
        click.echo(f"Error: {blind}", err=True)
        raise click.exceptions.Exit(EXIT_BLIND)
    if mismatch:
        raise click.exceptions.Exit(EXIT_MISMATCH)


def _report(collector: Any, path: str, stats: DetectorStats, events: list[SkewEvent],
            source: str, baseline_path: str | None, blind: str | None) -> None:
    """Write the report, unless the run judged nothing: then a report would look fine."""
    if blind is not None:
        stale = " (the file there is from an earlier run)" if Path(path).exists() else ""
        click.echo(f"no report written to {path}{stale}: the run judged nothing it could "
                   "show", err=True)
        return
    from .report import write_report

    write_report(collector.data(stats, events, source, baseline_path), path)
    click.echo(f"report: {path}", err=True)


# -- demo --------------------------------------------------------------------------------------


@main.command()
@click.option("--output-dir", default="streamskew-demo", show_default=True,
              type=click.Path(file_okay=False),
              help="Where the baseline, events, dead letters and report are written.")
@click.option("--no-report", is_flag=True, help="Skip the HTML report.")
def demo(output_dir: str, no_report: bool) -> None:
    """Run the engine on bundled sample data with injected skews (no Kafka needed)."""
    from .demo import run_demo

    run_demo(Path(output_dir), report=not no_report)


# -- kafka ---------------------------------------------------------------------------------


def _kafka_options(command: Any) -> Any:
    """The options every Kafka command shares."""
    for option in reversed([
        click.option("--config", "config_path", required=True,
                     type=click.Path(dir_okay=False), help="TOML config with a [kafka] section."),
        click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False),
                     help="Baseline file (default: `baseline` in the config)."),
        click.option("--bootstrap-servers", help="Overrides [kafka] bootstrap_servers."),
    ]):
        command = option(command)
    return command


@main.command()
@_kafka_options
@click.option("--until-end", is_flag=True,
              help="Stop once caught up with the end offsets seen at start (batch jobs).")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              envvar="STREAMSKEW_METRICS_HOST", show_envvar=True,
              help="Address the metrics endpoint listens on; 0.0.0.0 opens it to the network "
              "(the container image sets it so).")
@click.option("--checkpoint-interval", default="1s", show_default=True,
              help="How often offsets, panes, state and alerts are committed together.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Detector processes in this group on this machine (one per core, at most "
              "one per partition); worker i serves metrics on --metrics-port + i.")
def run(config_path: str, baseline_path: str | None, bootstrap_servers: str | None,
        until_end: bool, metrics_port: int | None, metrics_host: str,
        checkpoint_interval: str, workers: int) -> None:
    """Join the consumer group and publish skew events to the alerts topic."""
    import signal
    import threading

    from .config import parse_duration

    config = _load_config(config_path)
    baseline = _kafka_baselines(baseline_path, config, bootstrap_servers)
    try:
        interval = parse_duration(checkpoint_interval) / 1000
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--checkpoint-interval") from None
    if metrics_port is not None:
        _require("prometheus_client")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def show(event: SkewEvent) -> None:
        click.echo(f"{event.type} {event.key} {event.check} {event.metric} "
                   f"value={event.value:.4g} threshold={event.threshold:.4g}", err=True)

    def show_metrics(worker: int, port: int) -> None:
        click.echo(f"metrics on http://{metrics_host}:{port}/metrics"
                   + (f" (worker {worker})" if workers > 1 else ""), err=True)

    options = {"bootstrap_servers": bootstrap_servers, "until_end": until_end,
               "checkpoint_interval_s": interval, "on_event": show}
    # A baseline that does not fit the traffic is said at the first window, in the log.
    watch = WindowWatch(None, _baseline_label(baseline_path or config.baseline, baseline),
                        announce=True)
    try:
        if workers > 1:
            from .kafka.workers import run_workers

            watch = None  # each worker watches its own windows (and says so in its log)
            stats = run_workers(config, baseline, workers, stop, metrics_port=metrics_port,
                                metrics_host=metrics_host, on_metrics=show_metrics, **options)
        else:
            stats = _run_one(config, baseline, stop, (metrics_host, metrics_port),
                             show_metrics, {**options, "on_window": watch.on_window})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:
        raise _Problem(str(exc)) from None
    b = stats.builders
    click.echo(f"records={b.records} accepted={b.accepted} rejected={b.bad_total} "
               f"field_errors={sum(b.field_errors.values())} late={b.late} "
               f"dead_letters={stats.dead_letters} windows={stats.windows} "
               f"events={len(stats.events)}", err=True)
    if stats.labels is not None:  # [labels]: the join's counts
        click.echo(stats.labels.summary(), err=True)
    if stats.kafka_errors:
        waited = ", ".join(f"{name} x{count}" for name, count in sorted(stats.kafka_errors.items()))
        click.echo(f"Kafka failures waited out: {waited}", err=True)
    for warning in stats.warnings:  # said in the log as they happened; again at the end
        click.echo(f"Warning: {warning}", err=True)
    if until_end:
        topics = ", ".join(config.kafka.topics) or config.kafka.topic_pattern or "the topics"
        if watch is not None:
            watch.finish()
        _finish(_verdict(RunCounts.of(b, windows=stats.windows), config, "run", topics), watch)


def _run_one(config: Config, baseline: Baseline, stop: Any,
             metrics_address: tuple[str, int | None], show_metrics: Any,
             options: dict[str, Any]) -> Any:
    """`run` in this process (one worker); metrics on ``(host, port)`` when a port is set."""
    from .kafka.service import DetectorService

    metrics = None
    host, port = metrics_address
    if port is not None:
        from .kafka.metrics import ServiceMetrics

        metrics = ServiceMetrics(port, host)
        show_metrics(0, metrics.start())
    try:
        return DetectorService(config, baseline, metrics=metrics, **options).run(stop)
    finally:
        if metrics is not None:
            metrics.stop()


@main.command()
@_kafka_options
@click.option("--from", "start", required=True,
              help="Start of the event-time range: ISO-8601, epoch ms, or relative (-2h).")
@click.option("--to", "end", help="End of the range (exclusive); default: the end of the topic.")
@click.option("--output", type=click.Path(dir_okay=False),
              help="Write events as JSON lines here (default: stdout).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write an HTML report here.")
@click.option("--publish", is_flag=True, help="Send the events to the alerts topic instead.")
def replay(config_path: str, baseline_path: str | None, bootstrap_servers: str | None,
           start: str, end: str | None, output: str | None, report: str | None,
           publish: bool) -> None:
    """Re-run detection over a time range of the topics; commits nothing to the live group."""
    from .kafka.replay import replay as run_replay
    from .report.collect import ReportCollector
    from .timeparse import parse_time

    config = _load_config(config_path)
    baseline = _kafka_baselines(baseline_path, config, bootstrap_servers)
    try:
        start_ms = parse_time(start)
        end_ms = parse_time(end) if end else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if end_ms is not None and end_ms <= start_ms:
        raise click.BadParameter("--to must be after --from")
    if publish and output:
        raise click.UsageError("--publish and --output are exclusive")
    if report:
        _require("jinja2")
    collector = ReportCollector(_any_baseline(baseline)) if report else None
    watch = WindowWatch(collector.on_window if collector else None,
                        _baseline_label(baseline_path or config.baseline, baseline),
                        announce=False)
    with ExitStack() as stack:
        sink = _event_sink(stack, config, bootstrap_servers, output, publish)
        try:
            result = run_replay(config, baseline, start_ms, end_ms, bootstrap_servers,
                                on_event=sink, on_window=watch.on_window,
                                on_bad_record=collector.on_bad_record if collector else None,
                                on_performance_window=collector.on_performance_window
                                if collector else None)
        except (RuntimeError, TimeoutError) as exc:
            raise _Problem(str(exc)) from None
    watch.finish()
    stats = result.stats
    click.echo(f"records={result.records} accepted={stats.accepted} rejected={stats.bad_total} "
               f"outside_range={stats.outside_range} late={stats.late} "
               f"windows={result.windows} events={len(result.events)}", err=True)
    if result.labels is not None:  # [labels]: the join's counts, as `run` prints them
        outside = f"; label records read={result.label_records} outside the label range=" \
            f"{result.labels_outside_range}" if result.labels_outside_range else ""
        click.echo(result.labels.summary() + outside, err=True)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    counts = RunCounts.of(stats, windows=result.windows, watch=watch,
                          time_range=(start_ms, end_ms))
    counts.records = result.records
    topics = ", ".join(config.kafka.topics) or config.kafka.topic_pattern or "the topics"
    blind = _verdict(counts, config, "replay", topics)
    if collector is not None:
        summary = DetectorStats(records=stats.records, accepted=stats.accepted, bad=stats.bad,
                                field_errors=stats.field_errors, late=stats.late,
                                windows=result.windows, events=len(result.events),
                                labels=result.labels)
        _report(collector, report, summary, result.events,
                f"replay {start} .. {end or 'end'}", baseline_path or config.baseline, blind)
    _finish(blind, watch)


def _event_sink(stack: ExitStack, config: Config, bootstrap_servers: str | None,
                output: str | None, publish: bool, table: bool = False) -> Any:
    """Where events go: the alerts topic, a file, or stdout (JSON lines or a table)."""
    if publish:
        from kafka import KafkaAdminClient, KafkaProducer

        from .kafka.clients import admin_settings, producer_settings
        from .kafka.topics import ensure_topics, internal_topics

        admin = KafkaAdminClient(**admin_settings(config.kafka, bootstrap_servers))
        try:
            ensure_topics(admin, [t for t in internal_topics(config.kafka)
                                  if t.name == config.kafka.alerts_topic])
        finally:
            admin.close()
        producer = KafkaProducer(**producer_settings(config.kafka, bootstrap_servers,
                                                     enable_idempotence=True))
        stack.callback(producer.close)
        stack.callback(producer.flush)

        def send(event: SkewEvent) -> None:
            producer.send(config.kafka.alerts_topic, key=event.key.encode(),
                          value=event.to_json(), timestamp_ms=event.window_end)
        return send
    out: IO[bytes] = (stack.enter_context(open(output, "wb"))  # noqa: SIM115 - stack closes
                      if output else sys.stdout.buffer)
    if table:
        from .display import event_line, when_label

        color = output is None and sys.stdout.isatty()

        def print_line(event: SkewEvent) -> None:
            out.write(event_line(event, when_label(event), color).encode() + b"\n")
            out.flush()
        return print_line

    def write(event: SkewEvent) -> None:
        out.write(event.to_json() + b"\n")
        out.flush()
    return write


def _register_optional_commands() -> None:
    """Kafka commands live in the kafka adapter; the core works without loading it."""
    try:
        from .kafka.local import local_kafka
    except ImportError:  # pragma: no cover - kafka-python is a core dependency
        return
    from .kafka.alerts import alerts

    main.add_command(local_kafka)
    main.add_command(alerts)


_register_optional_commands()
_add_common_params(main)


if __name__ == "__main__":  # pragma: no cover
    main()
