"""The figures of issue 7, measured in one run against a live stack.

    python benchmarks/run.py [--quick] [--json FILE] [--markdown] [--root DIR] [--kafka KIND]

Addresses come from the environment or ``<root>/.onex-dev/env`` (``onex-node dev up``); when no
stack answers there, one is started in a temporary folder and stopped at the end. Progress,
per-sample figures and the machine go to stderr; the table to stdout; ``--json`` writes exactly
the figures' keys. ``--quick`` (fewer samples) finishes within a minute, starting its own
stack included.

Exit status: 0 when every figure was measured (goals are reported, not enforced), 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

if __package__ in (None, ""):
    # Run as a script: make ``benchmarks`` importable from the checkout.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (
    consume,
    generation,
    loops,
    nodes,
    pipeline,
    publish,
    registry,
    report,
    selfhost,
)
from benchmarks.stack import BenchStack, bench_stack
from onex_scaffold import naming

T = TypeVar("T")
CHECKOUT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plan:
    generations: int
    floor_runs: int
    startup_nodes: int
    idle_s: float
    publish_messages: int
    publish_rounds: int
    registry_nodes: int
    #: aiokafka and FastStream publish this many per round (they are the slow ones).
    peer_messages: int
    consume_messages: int
    consume_rounds: int


PARTS = ("generation", "startup", "publishing", "consuming", "registry", "pipeline", "selfhost")

QUICK = Plan(3, 3, 2, 2.0, 5_000, 2, 100, 2_000, 5_000, 1)
FULL = Plan(10, 10, 5, 5.0, 20_000, 5, 500, 10_000, 20_000, 3)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def samples_text(values: list[float], unit: str = "s") -> str:
    return ", ".join(f"{v:.3f}{unit}" for v in values)


class Run:
    """One benchmark run: the figures so far, and what went wrong."""

    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.values: dict[str, float | None] = dict.fromkeys(report.KEYS)
        self.failures: list[str] = []
        self.node_folders: list[Path] = []
        self.rows: list[report.Contender] = []
        #: Nodes run on uvloop when it is installed; so do the async measurements here.
        self.loop_factory = loops.uvloop_factory()
        self.values["uvloop"] = float(self.loop_factory is not None)

    def attempt(self, what: str, action: Callable[[], T]) -> T | None:
        try:
            return action()
        except Exception as error:  # one failed measurement must not lose the others
            self.failures.append(f"{what}: {error}")
            log(f"{what} FAILED: {error}")
            traceback.print_exc(file=sys.stderr)
            return None

    # -- generation ------------------------------------------------------------------------
    def generation(self) -> None:
        node_repo = generation.node_template_repo(self.work / "node-template")
        floor_repo = generation.one_file_template_repo(self.work / "one-file-template")
        out = self.work / "generated"
        # One warm-up of each (imports, first clone) is left out of the medians.
        generation.time_generate_node(node_repo, out / "warm-up-node")
        generation.time_copier_floor(floor_repo, out / "warm-up-floor")
        generated: list[float] = []
        floor: list[float] = []
        plain: list[float] = []
        answers = generation.recorded_answers(out / "warm-up-node")
        # Alternating the two keeps machine noise from favouring either.
        for index in range(max(self.plan.generations, self.plan.floor_runs)):
            if index < self.plan.generations:
                folder = out / f"node-{index}"
                generated.append(generation.time_generate_node(node_repo, folder))
                self.node_folders.append(folder)
                # Copier alone on the same template and answers: the stage's own share.
                plain.append(generation.time_plain_copy(node_repo, answers, out / f"plain-{index}"))
            if index < self.plan.floor_runs:
                floor.append(generation.time_copier_floor(floor_repo, out / f"floor-{index}"))
        log(f"generate_node samples: {samples_text(generated)}")
        log(f"copier floor samples:  {samples_text(floor)}")
        log(
            f"run_copy of the node template with the same answers: {samples_text(plain)} "
            f"(median {report.median(plain):.3f}s: the rest of generate_node_s is the stage's)"
        )
        generate_s, floor_s = report.median(generated), report.median(floor)
        self.values["generate_node_s"] = generate_s
        self.values["copier_floor_s"] = floor_s
        self.values["generation_ratio"] = report.ratio(generate_s, floor_s)

    # -- node processes --------------------------------------------------------------------
    def startup(self, stack: BenchStack) -> None:
        if not self.node_folders:
            raise RuntimeError("no generated node to start (generation failed)")
        service = str(generation.PARSED_DATA["service_name"])
        env = {"KAFKA_BOOTSTRAP_SERVERS": stack.kafka, "KAFKA_ENVIRONMENT": stack.environment}
        log_dir = self.work / "node-logs"
        log_dir.mkdir(exist_ok=True)
        consul = nodes.ConsulHealth(stack.consul_url)
        running: list[nodes.NodeProcess] = []
        apps: list[nodes.NodeProcess] = []
        ready: list[float] = []
        startup: list[float] = []
        app_ready: list[float] = []
        app_topic = f"{stack.environment}.bench.faststream-app"
        try:
            # One process at a time, alternating ours and the FastStream app.
            for index in range(self.plan.startup_nodes):
                folder = self.node_folders[index % len(self.node_folders)]
                node = nodes.start_node(folder, service, f"bench-{index}", env, log_dir)
                running.append(node)
                ready.append(nodes.wait_ready(node))
                startup.append(nodes.wait_passing(node, consul))
                app = nodes.start_faststream_app(self.work, f"fs-{index}", env, app_topic, log_dir)
                apps.append(app)
                app_ready.append(nodes.wait_line(app))
            log(f"start_node.py -> /health 200 samples: {samples_text(ready)}")
            log(f"start_node.py -> passing in Consul samples: {samples_text(startup)}")
            log(f"FastStream app -> after_startup samples: {samples_text(app_ready)}")
            self.values["startup_to_passing_s"] = report.median(startup)
            self.values["startup_vs_faststream"] = report.ratio(
                report.median(ready), report.median(app_ready)
            )
            nodes.wait_idle(running + apps, self.plan.idle_s)
            rss = [node.rss_mb() for node in running]
            app_rss = [app.rss_mb() for app in apps]
            log(f"idle node RSS samples: {samples_text(rss, ' MB')}")
            log(f"idle FastStream app RSS samples: {samples_text(app_rss, ' MB')}")
            self.values["node_rss_mb"] = report.median(rss)
            self.values["node_rss_vs_faststream"] = report.ratio(
                report.median(rss), report.median(app_rss)
            )
            self.rows += [
                report.Contender(
                    "start to ready",
                    "our node (/health 200)",
                    report.median(ready),
                    "s",
                    higher_is_better=False,
                ),
                report.Contender(
                    "start to ready",
                    "FastStream app (after_startup)",
                    report.median(app_ready),
                    "s",
                    higher_is_better=False,
                ),
                report.Contender(
                    "idle memory",
                    "our node",
                    report.median(rss),
                    "MB RSS",
                    higher_is_better=False,
                ),
                report.Contender(
                    "idle memory",
                    "FastStream app",
                    report.median(app_rss),
                    "MB RSS",
                    higher_is_better=False,
                ),
            ]
        finally:
            for process in running + apps:
                process.stop()
            consul.close()

    # -- publishing ------------------------------------------------------------------------
    def publishing(self, stack: BenchStack) -> None:
        folder, package = self._runtime_source()
        result = publish.run(
            stack.kafka,
            stack.environment,
            folder,
            package,
            messages=self.plan.publish_messages,
            rounds=self.plan.publish_rounds,
            peer_messages=self.plan.peer_messages,
            loop_factory=self.loop_factory,
        )
        log(f"publish: {result.record_bytes} B per record, event loop {result.loop}")
        for name, error in result.errors.items():
            log(f"  {name} NOT MEASURED: {error}")
        for name in result.msgs_per_s:
            log(
                f"  {name}: {samples_text(result.msgs_per_s[name], '/s')}; CPU per record "
                f"{samples_text(result.cpu_us[name], ' us')}"
            )
        med = result.median
        self.values["publish_ratio"] = report.ratio(med("publish"), med("raw"))
        self.values["publish_vs_floor"] = report.ratio(med("publish"), med("floor"))
        self.values["publish_vs_faststream"] = report.ratio(med("publish"), med("faststream"))
        self.values["publish_vs_aiokafka"] = report.ratio(med("publish"), med("aiokafka"))
        self.values["publish_many_ratio"] = report.ratio(med("publish_many"), med("raw"))
        labels = {
            "raw": ("raw Producer (produce/poll/flush, nothing awaited)", ""),
            "floor": ("floor: raw Producer, one awaited future per record", result.loop),
            "publish": ("ours: await publish() per event", result.loop),
            "publish_many": ("ours: await publish_many() of 1000", result.loop),
            "faststream": ("FastStream KafkaBroker.publish", result.loop),
            "aiokafka": ("aiokafka send_and_wait", result.loop),
            "publish_asyncio": ("ours: await publish(), asyncio loop", "asyncio"),
            "floor_asyncio": ("floor, asyncio loop", "asyncio"),
            "publish_default_gc": ("ours: await publish(), CPython's default GC", result.loop),
            "floor_per_record_wakeup": (
                "floor, one loop wake-up per record",
                result.loop,
            ),
        }
        for name, (label, note) in labels.items():
            if name in result.msgs_per_s:
                self.rows.append(
                    report.Contender(
                        "publish (awaited, 1000 in flight)",
                        label,
                        med(name),
                        cpu_us=report.median(result.cpu_us[name]),
                        note=note,
                    )
                )

    # -- consuming -------------------------------------------------------------------------
    def consuming(self, stack: BenchStack) -> None:
        folder, package = self._runtime_source()
        publisher_module, events_module = publish.load_runtime(folder, package)
        consumer_module = importlib.import_module(f"{package}.runtime.consumer")
        value, headers = publish.same_bytes_as_publisher(
            publisher_module, events_module, publish.payload(512)
        )
        topic = publish.bench_topic(stack.environment, f"consume-{uuid.uuid4().hex[:8]}")
        publish.create_topic(stack.kafka, topic)
        try:
            result = consume.run(
                stack.kafka,
                topic,
                (consumer_module, publisher_module, events_module),
                value,
                headers,
                self.plan.consume_messages,
                self.plan.consume_rounds,
                self.loop_factory,
            )
        finally:
            publish.delete_topic(stack.kafka, topic)
        for name, rates in result.msgs_per_s.items():
            log(f"consume {name}: {samples_text(rates, '/s')}")
        med = {name: report.median(rates) for name, rates in result.msgs_per_s.items()}
        self.values["consume_ratio"] = report.ratio(med["ours"], med["plain"])
        self.values["consume_vs_faststream"] = report.ratio(med["ours"], med["faststream"])
        task = "consume (no-op handler, at-least-once)"
        self.rows += [
            report.Contender(task, "plain confluent-kafka loop (floor)", med["plain"]),
            report.Contender(
                task, "ours: EventConsumer", med["ours"], note=loops.name(self.loop_factory)
            ),
            report.Contender(
                task, "FastStream subscriber", med["faststream"], note=loops.name(self.loop_factory)
            ),
        ]

    # -- registry --------------------------------------------------------------------------
    def registry(self, stack: BenchStack) -> None:
        folder, package = self._runtime_source()
        publisher_module, events_module = publish.load_runtime(folder, package)
        result = registry.run(
            publisher_module,
            events_module,
            stack.kafka,
            stack.consul_url,
            stack.environment,
            self.plan.registry_nodes,
        )
        removed = f"{result.removed_s:.2f}s" if result.removed_s is not None else "not within 60s"
        log(
            f"registry: {result.nodes} announcements published in {result.publish_s:.2f}s, "
            f"all passing in Consul after {result.all_passing_s:.2f}s; removed after {removed}"
        )
        self.values["registry_nodes_per_s"] = result.nodes_per_s
        floor = registry.consul_floor(
            registry.load_registry_module(CHECKOUT), stack.consul_url, self.plan.registry_nodes
        )
        log(
            f"Consul floor: {floor.nodes} registrations made in {floor.publish_s:.2f}s, all "
            f"passing after {floor.all_passing_s:.2f}s"
        )
        self.values["registry_ratio"] = report.ratio(result.nodes_per_s, floor.nodes_per_s)
        task = f"registry ({self.plan.registry_nodes} nodes to passing)"
        self.rows += [
            report.Contender(
                task, "direct Consul agent calls (floor)", floor.nodes_per_s, "nodes/s"
            ),
            report.Contender(
                task, "ours: announcements via Kafka -> registry", result.nodes_per_s, "nodes/s"
            ),
        ]

    def pipeline(self, stack: BenchStack) -> None:
        samples, batch = (3, 4) if self.plan is QUICK else (5, 6)
        result = pipeline.run(
            stack.kafka, stack.consul_url, stack.environment, self.work / "pipeline", samples, batch
        )
        log(f"pipeline request (bus) samples: {samples_text(result.bus_s)}")
        log(f"same stages in one process:     {samples_text(result.in_process_s)}")
        for stage, values in result.stage_ms.items():
            log(f"  {stage}: median {report.median(values):.0f} ms")
        bus_s = report.median(result.bus_s)
        self.values["pipeline_request_s"] = bus_s
        self.values["pipeline_overhead_ratio"] = report.ratio(
            bus_s, report.median(result.in_process_s)
        )
        self.values["pipeline_throughput_1_per_min"] = result.throughput_1_per_min
        self.values["pipeline_throughput_2_per_min"] = result.throughput_2_per_min

    def selfhost(self, stack: BenchStack) -> None:
        result = selfhost.run(stack.root, stack.kafka, stack.environment, self.work / "selfhost")
        log(
            f"regenerate-self --check: {result.regeneration_s:.1f} s"
            + (" (drift found)" if result.regeneration_drift else "")
        )
        log(
            f"rolling restart of the stage nodes: {result.rollout_requests} requests in "
            f"{result.rollout_s:.1f} s, {result.rollout_lost} lost, "
            f"{result.rollout_duplicated} completed twice"
        )
        self.values["self_regeneration_s"] = result.regeneration_s
        self.values["rollout_requests"] = float(result.rollout_requests)
        self.values["rollout_lost_or_duplicated"] = float(
            result.rollout_lost + result.rollout_duplicated
        )

    def _runtime_source(self) -> tuple[Path, str]:
        if not self.node_folders:
            raise RuntimeError("no generated node to take the runtime from (generation failed)")
        package = str(naming().package_name(str(generation.PARSED_DATA["service_name"])))
        return self.node_folders[0], package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer samples, no pipeline part; about a minute",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("ONEX_DEV_ROOT", ".")),
        help="folder whose .onex-dev/env names the stack (default: $ONEX_DEV_ROOT or .)",
    )
    parser.add_argument(
        "--kafka",
        choices=["apache", "tansu"],
        default="apache",
        help="broker for a stack this run has to start itself (default: apache)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (node logs)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--skip",
        action="append",
        choices=PARTS[1:],  # the others run on the nodes generation makes
        default=[],
        help="leave a part out (repeatable); its figures are then null",
    )
    args = parser.parse_args(argv)
    # A run stopped with SIGTERM (a CI time limit, `kill`) still stops the stack it started
    # and removes its work folder: the signal becomes SystemExit, so the `finally`s run.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    log(f"machine: {report.machine()}")
    log(f"plan: {plan}")
    load_before = report.load_average()
    work = Path(tempfile.mkdtemp(prefix="onex-bench-"))
    run = Run(plan, work)
    for slow in ("pipeline", "selfhost"):
        if args.quick and slow not in args.skip:
            # Their requests run mypy and the nodes' tests: minutes on their own, so --quick
            # (about a minute) leaves them out; the full run measures them.
            args.skip.append(slow)
    wanted = [part for part in PARTS if part not in args.skip]
    try:
        run.attempt("generation", run.generation)
        needs_pipeline = "pipeline" in wanted or "selfhost" in wanted
        with bench_stack(args.root.resolve(), args.kafka, needs_pipeline) as stack:
            parts: dict[str, Callable[[BenchStack], None]] = {
                "startup": run.startup,
                "publishing": run.publishing,
                "consuming": run.consuming,
                "registry": run.registry,
                "pipeline": run.pipeline,
                "selfhost": run.selfhost,
            }
            for part, measure in parts.items():
                if part in wanted:
                    run.attempt(part, functools.partial(measure, stack))
    except Exception as error:  # the stack itself could not be reached or started
        run.failures.append(f"stack: {error}")
        log(f"stack FAILED: {error}")
    finally:
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(report.table(run.values, markdown=args.markdown))
    print()
    print(report.contenders_table(run.rows, markdown=args.markdown))
    if args.skip:
        print(f"left out: {', '.join(args.skip)}")
    print(
        f"machine: {report.machine()}; load average {load_before} at the start, "
        f"{report.load_average()} at the end; {time.perf_counter() - started:.0f}s in all"
    )
    if args.json is not None:
        args.json.write_text(report.to_json(run.values))
        log(f"figures written to {args.json}")
    for failure in run.failures:
        log(f"not measured: {failure}")
    return 1 if run.failures else 0


def _exit_on_signal(number: int, _frame: object) -> None:
    log(f"stopped by signal {number}: cleaning up")
    raise SystemExit(128 + number)


if __name__ == "__main__":
    sys.exit(main())
