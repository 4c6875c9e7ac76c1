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


@dataclass(frozen=True)
class GroupCounts:
    """How many groups (queries, or focus topics) each split gets from ``groups`` at the asked fractions."""

    train: int
    validation: int
    test: int

    def empty_splits(self, validation: float, test: float) -> list[str]:
        """The splits that were asked for (fraction > 0, train always) and get no group."""
        asked = {"train": 1.0, "validation": validation, "test": test}
        return [name for name, fraction in asked.items() if fraction > 0 and getattr(self, name) == 0]


MAX_GROUPS_SEARCHED = 100_000


def check_fractions(validation: float, test: float) -> None:
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise DataError(f"split fractions validation={validation}, test={test} must be in [0, 1) and sum below 1")


def group_counts(groups: int, *, validation: float, test: float) -> GroupCounts:
    """The cut ``split_by_group`` makes: test and validation groups rounded from the fractions, train the rest."""
    check_fractions(validation, test)
    n_test = round(groups * test)
    n_validation = round(groups * validation)
    return GroupCounts(max(0, groups - n_test - n_validation), n_validation, n_test)


def groups_needed(*, validation: float, test: float) -> int:
    """The fewest groups for which no asked-for split is empty: what a user with too few labelled queries
    must reach (6 queries at the default 0.1 / 0.2)."""
    for groups in range(1, MAX_GROUPS_SEARCHED):
        if not group_counts(groups, validation=validation, test=test).empty_splits(validation, test):
            return groups
    raise DataError(f"split fractions validation={validation}, test={test} leave a split empty at any size")


def split_by_group(frame: pd.DataFrame, group_column: str, *, validation: float = 0.1, test: float = 0.2,
                   seed: int = 42, source: str = "data") -> Splits:
    """Shuffle the distinct groups with ``seed`` and cut them by the fractions asked for."""
    if group_column not in frame.columns:
        raise DataError(f"{source}: no column {group_column!r} to group the split by")
    check_fractions(validation, test)
    groups = np.array(sorted(frame[group_column].astype(str).unique()))
    np.random.default_rng(seed).shuffle(groups)
    counts = group_counts(len(groups), validation=validation, test=test)
    n_test, n_validation = counts.test, counts.validation
    test_groups = set(groups[:n_test])
    validation_groups = set(groups[n_test:n_test + n_validation])
    keys = frame[group_column].astype(str)
    splits = Splits(
        train=frame[~keys.isin(test_groups | validation_groups)].reset_index(drop=True),
        validation=frame[keys.isin(validation_groups)].reset_index(drop=True),
        test=frame[keys.isin(test_groups)].reset_index(drop=True),
    )
    empty = counts.empty_splits(validation, test)
    if empty:
        raise DataError(f"{source}: the {empty[0]} split is empty after grouping by {group_column!r} "
                        f"({len(groups)} groups; {groups_needed(validation=validation, test=test)} needed at "
                        f"validation={validation:g}, test={test:g}): add data or change the fractions")
    return splits
