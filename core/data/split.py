"""Train / validation / test splits grouped so that no group (query, or focus) is in two splits.

A query that appears in training and in test makes the test measure memory, not search;
for MedQuAD the group is the disease (``focus``), for the catalogue the query.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import DataError


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def split_by_group(frame: pd.DataFrame, group_column: str, *, validation: float = 0.1, test: float = 0.2,
                   seed: int = 42, source: str = "data") -> Splits:
    """Shuffle the distinct groups with ``seed`` and cut them by the fractions asked for."""
    if group_column not in frame.columns:
        raise DataError(f"{source}: no column {group_column!r} to group the split by")
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise DataError(f"split fractions validation={validation}, test={test} must be in [0, 1) and sum below 1")
    groups = np.array(sorted(frame[group_column].astype(str).unique()))
    np.random.default_rng(seed).shuffle(groups)
    n_test = round(len(groups) * test)
    n_validation = round(len(groups) * validation)
    test_groups = set(groups[:n_test])
    validation_groups = set(groups[n_test:n_test + n_validation])
    keys = frame[group_column].astype(str)
    splits = Splits(
        train=frame[~keys.isin(test_groups | validation_groups)].reset_index(drop=True),
        validation=frame[keys.isin(validation_groups)].reset_index(drop=True),
        test=frame[keys.isin(test_groups)].reset_index(drop=True),
    )
    for name, fraction in (("train", 1.0), ("validation", validation), ("test", test)):
        if fraction > 0 and len(getattr(splits, name)) == 0:
            raise DataError(f"{source}: the {name} split is empty after grouping by {group_column!r} "
                            f"({len(groups)} groups): add data or change the fractions")
    return splits
