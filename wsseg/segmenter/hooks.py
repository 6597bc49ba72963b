"""mmengine hooks the segmenter's training adds."""
from __future__ import annotations

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

from wsseg.store import open_store

RESUME_KEY = "last.pth"


@HOOKS.register_module()
class StoreCheckpointHook(CheckpointHook):
    """mmengine's `CheckpointHook`, plus a copy of every checkpoint in the step's store as `last.pth`.

    The local work dir dies with the pod (a retried KFP task starts on a fresh one), so the store copy is
    what a re-run resumes from. `start_iter` records the iteration training started at (0 unless resumed).
    """

    def __init__(self, store_uri: str, **kwargs):
        super().__init__(**kwargs)
        self.store_uri = store_uri
        self.start_iter = 0

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self.start_iter = runner.iter

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        super()._save_checkpoint_with_step(runner, step, meta)
        if is_main_process():
            open_store(self.store_uri).put_file(RESUME_KEY, self.last_ckpt)
