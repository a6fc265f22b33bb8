"""The ``streamskew`` command."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import click

from .baseline import Baseline, BaselineError
from .config import Config, ConfigError
from .detector import DetectorStats, SkewEvent
from .readers import FileProblem

__all__ = ["main"]


class _Problem(click.ClickException):
    """A user-facing error: printed as 'error: ...', exit code 1."""

    def format_message(self) -> str:
        return self.message


def _load_config(path: str | None) -> Config:
    if path is None:
        return Config()
    try:
        return Config.from_toml(path)
    except ConfigError as exc:
        raise _Problem(str(exc)) from None


def _load_baseline(path: str | None, config: Config) -> Baseline:
    path = path or config.baseline
    if not path:
        raise click.UsageError("no baseline: pass --baseline or set `baseline` in the config")
    try:
        return Baseline.load(path)
    except BaselineError as exc:
        raise _Problem(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="streamskew")
def main() -> None:
    """Catch training-serving skew: compare serving data with a baseline of training data."""


# -- baseline ----------------------------------------------------------------------------------


@main.group()
def baseline() -> None:
    """Build or inspect a baseline (the training data's per-feature summary)."""


@baseline.command("build")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config (message paths, feature kinds, [build] settings).")
@click.option("--input", "inputs", multiple=True, required=True,
              help="Training data: CSV (header row), JSONL or Parquet; several allowed.")
@click.argument("more_inputs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the baseline file (JSON).")
def baseline_build(config_path: str | None, inputs: tuple[str, ...],
                   more_inputs: tuple[str, ...], output: str) -> None:
    """Build a baseline: streamskew baseline build --input train.csv --output baseline.json"""
    config = _load_config(config_path)
    paths = [*inputs, *more_inputs]
    try:
        built = Baseline.build(paths, config, progress=sys.stderr.isatty())
    except (BaselineError, FileProblem) as exc:
        raise _Problem(str(exc)) from None
    built.save(output)
    click.echo(built.describe(), err=True)
    if built.skipped.total:
        click.echo(f"skipped {built.skipped.total} unreadable lines: {built.skipped.counts}; "
                   f"e.g. {'; '.join(built.skipped.examples)}", err=True)
    click.echo(f"wrote {output}", err=True)


@baseline.command("show")
@click.argument("path", type=click.Path(dir_okay=False))
def baseline_show(path: str) -> None:
    """Print a readable per-feature summary of a baseline file."""
    click.echo(_load_baseline(path, Config()).describe())


# -- detect ------------------------------------------------------------------------------------


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config; defaults apply when omitted.")
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False),
              help="Baseline file (default: `baseline` in the config).")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="JSONL file of prediction-request messages.")
@click.option("--output", type=click.Path(dir_okay=False),
              help="Write events as JSON lines here (default: stdout).")
@click.option("--dead-letter", type=click.Path(dir_okay=False),
              help="Write bad lines here, each with its reason and line number.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write an HTML report here.")
def detect(config_path: str | None, baseline_path: str | None, input_path: str,
           output: str | None, dead_letter: str | None, report: str | None) -> None:
    """Compare a file of logged requests with the baseline; print skew events."""
    from .files import detect_file
    from .report.collect import ReportCollector

    config = _load_config(config_path)
    baseline = _load_baseline(baseline_path, config)
    if not Path(input_path).is_file():
        raise _Problem(f"{input_path}: no such file")
    collector = ReportCollector(baseline) if report else None
    with ExitStack() as stack:
        write_event = _event_sink(stack, config, None, output, publish=False)
        dead: IO[bytes] | None = stack.enter_context(open(dead_letter, "wb")) \
            if dead_letter else None
        try:
            run = detect_file(config, baseline, input_path, on_event=write_event,
                              dead_letters=dead,
                              on_window=collector.on_window if collector else None,
                              on_bad_record=collector.on_bad_record if collector else None,
                              progress=sys.stderr.isatty())
        except OSError as exc:
            raise _Problem(f"{input_path}: cannot read: {exc.strerror}") from None
    _print_summary(run.detector.stats)
    if collector is not None:
        _write_report(collector, report, run.detector.stats, run.events,
                      f"detect: {input_path}", baseline_path or config.baseline)


def _print_summary(stats: DetectorStats) -> None:
    click.echo(stats.summary(), err=True)


def _write_report(collector: Any, path: str, stats: DetectorStats, events: list[SkewEvent],
                  source: str, baseline_path: str | None) -> None:
    try:
        from .report import write_report
    except ImportError as exc:
        raise _Problem(str(exc)) from None
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
@click.option("--checkpoint-interval", default="1s", show_default=True,
              help="How often offsets, panes, state and alerts are committed together.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Detector processes in this group on this machine (one per core, at most "
              "one per partition); worker i serves metrics on --metrics-port + i.")
def run(config_path: str, baseline_path: str | None, bootstrap_servers: str | None,
        until_end: bool, metrics_port: int | None, checkpoint_interval: str,
        workers: int) -> None:
    """Join the consumer group and publish skew events to the alerts topic."""
    import signal
    import threading

    from .config import parse_duration

    config = _load_config(config_path)
    baseline = _load_baseline(baseline_path, config)
    try:
        interval = parse_duration(checkpoint_interval) / 1000
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--checkpoint-interval") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def show(event: SkewEvent) -> None:
        click.echo(f"{event.type} {event.key} {event.check} {event.metric} "
                   f"value={event.value:.4g} threshold={event.threshold:.4g}", err=True)

    def show_metrics(worker: int, port: int) -> None:
        click.echo(f"metrics on :{port}/metrics" + (f" (worker {worker})" if workers > 1
                                                    else ""), err=True)

    options = {"bootstrap_servers": bootstrap_servers, "until_end": until_end,
               "checkpoint_interval_s": interval, "on_event": show}
    try:
        if workers > 1:
            from .kafka.workers import run_workers

            stats = run_workers(config, baseline, workers, stop, metrics_port=metrics_port,
                                on_metrics=show_metrics, **options)
        else:
            stats = _run_one(config, baseline, stop, metrics_port, show_metrics, options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:
        raise _Problem(str(exc)) from None
    b = stats.builders
    click.echo(f"records={b.records} accepted={b.accepted} rejected={b.bad_total} "
               f"field_errors={sum(b.field_errors.values())} late={b.late} "
               f"dead_letters={stats.dead_letters} windows={stats.windows} "
               f"events={len(stats.events)}", err=True)


def _run_one(config: Config, baseline: Baseline, stop: Any, metrics_port: int | None,
             show_metrics: Any, options: dict[str, Any]) -> Any:
    """`run` in this process (one worker)."""
    from .kafka.service import DetectorService

    metrics = None
    if metrics_port is not None:
        try:
            from .kafka.metrics import ServiceMetrics
        except ImportError as exc:
            raise _Problem(str(exc)) from None
        metrics = ServiceMetrics(metrics_port)
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
    baseline = _load_baseline(baseline_path, config)
    try:
        start_ms = parse_time(start)
        end_ms = parse_time(end) if end else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if end_ms is not None and end_ms <= start_ms:
        raise click.BadParameter("--to must be after --from")
    if publish and output:
        raise click.UsageError("--publish and --output are exclusive")
    collector = ReportCollector(baseline) if report else None
    with ExitStack() as stack:
        sink = _event_sink(stack, config, bootstrap_servers, output, publish)
        try:
            result = run_replay(config, baseline, start_ms, end_ms, bootstrap_servers,
                                on_event=sink,
                                on_window=collector.on_window if collector else None,
                                on_bad_record=collector.on_bad_record if collector else None)
        except (RuntimeError, TimeoutError) as exc:
            raise _Problem(str(exc)) from None
    stats = result.stats
    click.echo(f"records={result.records} accepted={stats.accepted} rejected={stats.bad_total} "
               f"outside_range={stats.outside_range} late={stats.late} "
               f"windows={result.windows} events={len(result.events)}", err=True)
    if collector is not None:
        summary = DetectorStats(records=stats.records, accepted=stats.accepted, bad=stats.bad,
                                field_errors=stats.field_errors, late=stats.late,
                                windows=result.windows, events=len(result.events))
        _write_report(collector, report, summary, result.events,
                      f"replay {start} .. {end or 'end'}", baseline_path or config.baseline)


def _event_sink(stack: ExitStack, config: Config, bootstrap_servers: str | None,
                output: str | None, publish: bool) -> Any:
    """Where events go: the alerts topic, a file, or stdout."""
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


if __name__ == "__main__":  # pragma: no cover
    main()
