"""An ensemble of classifiers (deep ensembles, Lakshminarayanan et al., NeurIPS'17): members trained alike from
different seeds, whose maps mining averages.

A classifier trained from scratch on a few hundred images fires on whichever discriminative parts its seed led it
to; another seed finds other parts of the same objects. The mean of their maps covers more of each object and
averages away what one member alone finds. Member k (1-based) trains with seed `seed + k - 1` into `member-<k>/`,
each a train-classifier output of its own (adversarial erasing's rounds included); `members.json` lists them.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import torch

from wsseg.errors import ConfigError
from wsseg.store import ArtifactStore
from wsseg.wsss.adversarial_erasing import erasing_rounds

log = logging.getLogger(__name__)

MEMBERS = "members.json"


def ensemble_size(settings: dict) -> int:
    count = settings["ensemble_members"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"classifier.ensemble_members: {count!r}; give a whole number of classifiers, 1 or more")
    return count


def train_ensemble(train: list, val: list, out: ArtifactStore, config: dict, classes, device, train_one) -> dict:
    """`train_one(train, val, store, config, classes, device)` once per member, each from its own seed."""
    seed = config.get("seed", 0)
    count, members, seconds = ensemble_size(config["classifier"]), [], 0.0
    for number in range(1, count + 1):
        torch.manual_seed(seed + number - 1)
        summary = train_one(train, val, out.child(f"member-{number}"), config, classes, device)
        seconds += summary["seconds"]
        members.append({"member": number, "seed": seed + number - 1, "val_map": summary["val_map"]})
        log.info("ensemble: member %d of %d trained (val mAP %s)", number, count, summary["val_map"])
    out.put_bytes(MEMBERS, json.dumps(members, indent=2).encode())
    scores = [member["val_map"] for member in members if member["val_map"] is not None]
    return dict(train_images=len(train), val_images=len(val), members=len(members), seconds=round(seconds, 1),
                val_map=round(float(np.mean(scores)), 4) if scores else None)


def ensemble_members(store: ArtifactStore) -> list[ArtifactStore]:
    """The classifier outputs a train-classifier store holds: its members, or the store itself."""
    if not store.exists(MEMBERS):
        return [store]
    return [store.child(f"member-{entry['member']}") for entry in json.loads(store.get_bytes(MEMBERS))]


def classifier_stores(store: ArtifactStore) -> list[list[tuple[ArtifactStore, set | None]]]:
    """Per member of the ensemble in a train-classifier output (one member for a single classifier), the stores of
    its classifiers with the classes each contributes maps of (None: all): one, or one per round of adversarial
    erasing."""
    stores = []
    for member in ensemble_members(store):
        rounds = erasing_rounds(member)
        stores.append([(member, None)] if rounds is None else
                      [(member.child(f"round-{entry['round']}"), set(entry["classes"])) for entry in rounds])
    return stores


def first_classifier(store: ArtifactStore) -> ArtifactStore:
    """The store of the first classifier in a train-classifier output: its first member's first round."""
    return classifier_stores(store)[0][0][0]
