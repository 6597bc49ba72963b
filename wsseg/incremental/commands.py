"""`wsseg incremental-update`: one inbox batch into the registry's next model, the incremental pipeline's step run
alone (`wsseg.steps.incremental_update`)."""
from __future__ import annotations

import json

from wsseg.incremental.registry import default_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("incremental-update",
                                   help="train the registry's next model on an inbox batch (WILSON) and propose it")
    parser.add_argument("--data", required=True, help="the held-out dataset (its val split, with masks) both the "
                                                      "current and the new model are scored on")
    parser.add_argument("--registry", required=True, metavar="URI", help="the model registry's store")
    parser.add_argument("--name", help=f"the model's name in the registry (default: registry.name, "
                                       f"{default_config('cpu')['name']})")
    parser.add_argument("--inbox", required=True, metavar="URI", help="the store new batches arrive in")
    parser.add_argument("--batch", help="the batch (default: the oldest one not processed yet that no other run "
                                        "holds)")
    parser.add_argument("--out", required=True, metavar="URI", help="store for the step's work and report")
    parser.add_argument("--config", help="YAML config, a path or a store URI (merged over the preset)")
    parser.add_argument("--preset", help="cpu-tiny, cpu or gpu (default: the config's, else cpu)")
    parser.add_argument("--strict", action="store_true", help="fail on the first bad input instead of skipping it")
    parser.set_defaults(func=_incremental_update)


def _incremental_update(args) -> int:
    from wsseg.classes import ClassList
    from wsseg.config import load_config
    from wsseg.incremental.inbox import Inbox, default_holder
    from wsseg.incremental.registry import ModelRegistry
    from wsseg.steps.incremental_update import incremental_update
    from wsseg.store import open_store

    config = load_config(args.config, args.preset)
    inbox = Inbox(open_store(args.inbox))
    holder = default_holder()
    batch = args.batch
    if batch is None:
        lease = inbox.claim_next(holder)
        batch = lease.batch if lease else None
    if batch is None:
        print(json.dumps({"batch": None, "outcome": f"no new batch in {inbox.uri} that no other run holds"}))
        return 0
    registry = ModelRegistry(open_store(args.registry), args.name or config["registry"]["name"])
    result = incremental_update(args.data, registry, inbox, batch, open_store(args.out).child(batch),
                                config, ClassList(config["classes"]), strict=args.strict or config["strict"],
                                holder=holder)
    print(json.dumps({key: result[key] for key in ("batch", "version", "parent", "promoted", "reasons")}))
    return 0
