"""`wsseg submit` and `wsseg schedule`: compiled pipelines onto a Kubeflow Pipelines server.

Both print one line, the URL of the run (or recurring run) in the KFP UI, so scripts can capture it.
"""
from __future__ import annotations

import os


def register(subparsers) -> None:
    submit = subparsers.add_parser("submit", help="start a run of a compiled pipeline on Kubeflow Pipelines")
    _add_pipeline_arguments(submit)
    submit.add_argument("--run-name", help="the run's name (default: pipeline name and UTC time)")
    submit.set_defaults(func=_submit)

    schedule = subparsers.add_parser("schedule", help="create a recurring run of a compiled pipeline")
    _add_pipeline_arguments(schedule)
    schedule.add_argument("--cron", required=True,
                          help="KFP's 6-field cron, seconds first: '0 0 3 * * *' runs at 03:00 every day")
    schedule.add_argument("--max-concurrency", type=int, default=1, metavar="N",
                          help="runs of this schedule allowed at once (default 1)")
    schedule.add_argument("--name", help="the recurring run's name (default: pipeline name and cron)")
    schedule.set_defaults(func=_schedule)


def _add_pipeline_arguments(parser) -> None:
    parser.add_argument("pipeline", metavar="PIPELINE",
                        help="compiled pipeline YAML, or a name looked up as build/pipelines/NAME.yaml")
    parser.add_argument("--host", default=os.environ.get("KF_PIPELINES_ENDPOINT"),
                        help="KFP API/UI address, e.g. http://localhost:8080 (default: $KF_PIPELINES_ENDPOINT)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a pipeline parameter, converted to the type the pipeline declares (3, 0.5, true, "
                             "text); repeatable")
    parser.add_argument("--experiment", default="wsseg", help="experiment to file the run under (default wsseg)")
    parser.add_argument("--namespace", help="profile namespace on a multi-user Kubeflow")
    parser.add_argument("--token", default=os.environ.get("KF_PIPELINES_TOKEN"),
                        help="bearer token for the KFP API (default: $KF_PIPELINES_TOKEN)")


def _prepare(args):
    from wsseg.errors import ConfigError
    from wsseg.kube.submit import Server, load_compiled_pipeline, parse_params

    if not args.host:
        raise ConfigError("no Kubeflow Pipelines address: pass --host URL or set KF_PIPELINES_ENDPOINT")
    pipeline = load_compiled_pipeline(args.pipeline)
    params = parse_params(args.param, pipeline)
    return Server(args.host, args.token, args.namespace), pipeline, params


def _submit(args) -> int:
    from wsseg.kube.submit import submit_run

    server, pipeline, params = _prepare(args)
    print(submit_run(server, pipeline, params, args.experiment, args.run_name))
    return 0


def _schedule(args) -> int:
    from wsseg.kube.submit import schedule_run, validate_cron

    validate_cron(args.cron)
    server, pipeline, params = _prepare(args)
    print(schedule_run(server, pipeline, params, args.experiment, args.cron, args.max_concurrency, args.name))
    return 0
