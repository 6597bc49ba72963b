"""mmengine hooks the segmenter's training adds."""
from __future__ import annotations

from mmengine.hooks import CheckpointHook, Hook
from mmseg.registry import HOOKS

from wsseg.runtime.random_states import random_states, set_random_states
from wsseg.segmenter.store_files import STORE_BACKEND_ARGS, checkpoint_folder

RESUME_KEY = "last.pth"


@HOOKS.register_module()
class StoreCheckpointHook(CheckpointHook):
    """mmengine's `CheckpointHook`, writing every checkpoint straight into the step's store as `last.pth`
    (through `wsseg.segmenter.store_files`), each replacing the one before in one atomic write.

    The local work dir dies with the pod (a retried KFP task starts on a fresh one), so the store's is what a
    re-run resumes from, and the pod's disk never holds a checkpoint. `start_iter` records the iteration training
    started at (0 unless resumed).
    """

    def __init__(self, store_uri: str, **kwargs):
        super().__init__(filename_tmpl=RESUME_KEY, backend_args=STORE_BACKEND_ARGS, **kwargs)
        self.store_uri = store_uri
        self.start_iter = 0

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self.out_dir = checkpoint_folder(self.store_uri)
        self.start_iter = runner.iter


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Keeps the random generators' states in every checkpoint and puts them back when training resumes, so that
    a training killed and rerun ends at the weights an uninterrupted one reaches.

    mmengine's resume restores the weights, optimizer and iteration, then replays the sampler by fetching the
    batches already trained; the draws since the seed (dropout, ClassMix's masks and jitter, the augmentations)
    are otherwise lost. The states go back after that replay, just before the first batch left to train. In a
    distributed run every rank takes the states rank 0 saved: the rerun is reproducible from the checkpoint,
    though its ranks no longer draw as they did.
    """

    def __init__(self):
        self.saved = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["random_states"] = random_states()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self.saved = checkpoint.get("random_states")

    def before_train(self, runner) -> None:
        # A warm start loads a checkpoint too, at iteration 0, and starts from the seed instead.
        if self.saved is not None and runner.iter > 0:
            loop = runner.train_loop
            loop.dataloader_iterator = _RestoredAfter(loop.dataloader_iterator, runner.iter, self.saved)


class _RestoredAfter:
    """The loop's batch iterator, putting `states` back once `replayed` batches have been fetched."""

    def __init__(self, batches, replayed: int, states: dict):
        self.batches, self.replayed, self.states = batches, replayed, states

    def __iter__(self):
        return self

    def __next__(self):
        if self.replayed == 0 and self.states is not None:
            set_random_states(self.states)
            self.states = None
        self.replayed -= 1
        return next(self.batches)
