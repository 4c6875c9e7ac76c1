"""The background fine-tuner: a collection that adapts itself to confirmed matches.

- ``finetuner``: ``LightweightFineTuner`` — confirmations, the trigger, the training thread, the gate
- ``examples``: the confirmed-example store (database rows, images copied into the workspace)
- ``strategies``: how each modality trains (``clip:`` image tower, ``screen:`` text model on OCR, text)
- ``serving``: the immutable snapshot lookups read, re-embedding, the swap, pruning old outputs
- ``stats``: what ``stats()`` and ``embtune debug finetuning`` report
- ``config``: ``FineTunerConfig``
"""

from core.online.config import FineTunerConfig
from core.online.finetuner import LightweightFineTuner
from core.online.stats import FineTuningStats, all_finetuning_stats, finetuning_stats

__all__ = ["FineTunerConfig", "FineTuningStats", "LightweightFineTuner", "all_finetuning_stats", "finetuning_stats"]
