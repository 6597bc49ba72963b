"""New classes: a model registry of numbered versions (`registry`), the promotion gate (`promotion`), the inbox of
new batches (`inbox`), WILSON (`wilson`, `wilson_losses`, `pamr`) and the forgetting curve (`forgetting_curve`);
the `wsseg models` (`registry_commands`) and `wsseg incremental-update` (`commands`) commands.
"""
