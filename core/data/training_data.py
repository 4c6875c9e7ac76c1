"""Training data from any source, normalised to one frame, plus the retrieval sets to judge it.

Sources: a CSV/JSONL/Parquet file, a saved Hugging Face ``datasets`` folder, the labelled
pairs in storage (``labels:COLLECTION``) or the bundled catalogue (``bundled:catalogue``).
Rows that point at items by id (``item_id``) get the item's text from a corpus (a file or
a collection), and keep the id so evaluation judges items, not strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.data.formats import detect_training_format, normalise_training_columns, read_table
from core.data.validate import DataReport, require_columns, validate_training_frame
from core.errors import DataError
from core.evaluation.sets import RetrievalSet


@dataclass
class TrainingData:
    frame: pd.DataFrame
    data_format: str
    report: DataReport
    corpus: dict[str, str]  # item id → text: every item evaluation ranks
    source: str


def load_training_data(source: str, *, data_format: str = "auto", corpus: str | None = None,
                       corpus_text_column: str = "text", db: Any = None) -> TrainingData:
    frame, corpus_items = _read_source(source, corpus, corpus_text_column, db)
    frame = normalise_training_columns(frame)
    if "item_id" in frame.columns and "positive" not in frame.columns:
        if corpus_items is None:
            raise DataError(f"{source}: rows name items by item_id; give the corpus (a file with id + text, "
                            "or a collection name)")
        unknown = ~frame["item_id"].astype(str).isin(corpus_items)
        if unknown.any():
            row = int(unknown.to_numpy().nonzero()[0][0])
            raise DataError(f"{source}: row {row + 1}: item_id {frame['item_id'].iloc[row]!r} is not in the corpus")
        frame = frame.assign(positive=frame["item_id"].astype(str).map(corpus_items))
    detected = detect_training_format(frame, source) if data_format == "auto" else data_format
    frame, report = validate_training_frame(frame, detected, source=source)
    if corpus_items is None:
        corpus_items = _corpus_from_texts(frame, detected)
    if "item_id" not in frame.columns and detected != "classes":
        ids_by_text = {text: item_id for item_id, text in corpus_items.items()}
        frame = frame.assign(item_id=frame["positive"].map(ids_by_text))
    return TrainingData(frame, detected, report, corpus_items, source)


def _read_source(source: str, corpus: str | None, corpus_text_column: str,
                 db: Any) -> tuple[pd.DataFrame, dict[str, str] | None]:
    if source == "bundled:catalogue":
        from core.data.bundled import CATALOGUE_QUERIES, catalogue_corpus

        return read_table(CATALOGUE_QUERIES), catalogue_corpus()
    if source.startswith("labels:"):
        return _labels_frame(source.split(":", 1)[1], db)
    path = Path(source)
    frame = _read_hf_dataset(path) if path.is_dir() else read_table(path)
    return frame, corpus_items(corpus, corpus_text_column, db) if corpus else None


def _read_hf_dataset(path: Path) -> pd.DataFrame:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{path}: not a saved Hugging Face dataset ({str(exc).splitlines()[0][:160]})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{path}: dataset has splits {', '.join(loaded)}; expected a 'train' split")
        loaded = loaded["train"]
    return loaded.to_pandas().astype(str)


def corpus_items(corpus: str, text_column: str = "text", db: Any = None) -> dict[str, str]:
    """Item id → text from an id+text file or from a collection in storage."""
    path = Path(corpus)
    if path.exists():
        frame = read_table(path)
        require_columns(frame, ["id", text_column], path)
        return dict(zip(frame["id"].astype(str), frame[text_column].astype(str), strict=True))
    if db is not None and db.get_collection(corpus) is not None:
        return {item.item_key: item.text or "" for item in db.collection_items(corpus)}
    raise DataError(f"corpus {corpus!r} is neither a file nor a collection")


def _labels_frame(collection: str, db: Any) -> tuple[pd.DataFrame, dict[str, str]]:
    if db is None:
        raise DataError("labels: needs the database")
    if db.get_collection(collection) is None:
        raise DataError(f"labels:{collection}: no collection named {collection!r}")
    corpus = {item.item_key: item.text or "" for item in db.collection_items(collection)}
    labels = db.labels(collection)
    if not labels:
        raise DataError(f"labels:{collection}: no labelled pairs yet")
    frame = pd.DataFrame([{"query": label.query, "item_id": label.item_key, "score": label.score}
                          for label in labels if label.item_key in corpus])
    # Two annotators on one pair: their mean is the judgement.
    frame = frame.groupby(["query", "item_id"], as_index=False)["score"].mean()
    return frame, corpus


def _corpus_from_texts(frame: pd.DataFrame, data_format: str) -> dict[str, str]:
    if data_format == "classes":
        return {}
    texts = list(dict.fromkeys(frame["positive"].tolist() + (frame["negative"].tolist()
                                                              if "negative" in frame.columns else [])))
    return {f"d{i + 1}": text for i, text in enumerate(texts)}


def group_column_for(frame: pd.DataFrame, requested: str = "auto") -> str:
    """``focus`` when the data has it (MedQuAD), else the query id, else the anchor text."""
    if requested != "auto":
        return requested
    for column in ("focus", "query_id", "anchor", "text"):
        if column in frame.columns:
            return column
    raise DataError("cannot choose a column to group the split by")


def retrieval_set_for(frame: pd.DataFrame, corpus: dict[str, str], name: str,
                      relevance_threshold: float = 0.5) -> RetrievalSet:
    """The split's anchors as queries against the whole corpus, judged by the split's rows."""
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    kinds: dict[str, str] = {}
    has_score = "score" in frame.columns
    for row in frame.to_dict(orient="records"):
        query_id = str(row.get("query_id") or query_ids.get(row["anchor"]) or f"q{len(query_ids) + 1}")
        query_ids.setdefault(row["anchor"], query_id)
        score = float(row["score"]) if has_score else 1.0
        judged = qrels.setdefault(query_ids[row["anchor"]], {})
        judged[str(row["item_id"])] = max(score, judged.get(str(row["item_id"]), 0.0))
        if row.get("kind"):
            kinds[query_ids[row["anchor"]]] = str(row["kind"])
    queries = {query_id: anchor for anchor, query_id in query_ids.items()}
    return RetrievalSet(name, queries, corpus, qrels, kinds)


# Which side each column a loss reads is on: the model's query prompt goes to the first, its document prompt to the
# items (a class label's text is compared with texts like itself, which e5-style models read as queries).
QUERY_COLUMNS = ("anchor", "sentence1", "text")
DOCUMENT_COLUMNS = ("positive", "negative", "sentence2")


def column_prompts(model_prompts: dict[str, str] | None, columns: list[str]) -> dict[str, str]:
    """The trainer's ``prompts`` argument: each text column gets its side's prompt, as search will apply them."""
    prompts = model_prompts or {}
    chosen = {column: prompts.get("query", "") for column in QUERY_COLUMNS if column in columns}
    chosen |= {column: prompts.get("document", "") for column in DOCUMENT_COLUMNS if column in columns}
    return {column: prompt for column, prompt in chosen.items() if prompt}


def loss_dataset(frame: pd.DataFrame, loss: str, data_format: str, relevance_threshold: float) -> Any:
    """The columns, in order, that the chosen sentence-transformers loss reads."""
    import datasets

    if data_format == "classes":
        labels = {label: index for index, label in enumerate(sorted(frame["label"].astype(str).unique()))}
        return datasets.Dataset.from_dict({"text": frame["text"].tolist(),
                                           "label": [labels[str(v)] for v in frame["label"]]})
    if loss in ("mnrl", "cached_mnrl"):
        if "score" in frame.columns:
            frame = frame[frame["score"].astype(float) >= relevance_threshold]
        columns = ["anchor", "positive"] + (["negative"] if "negative" in frame.columns else [])
        return datasets.Dataset.from_dict({c: frame[c].tolist() for c in columns})
    if loss == "triplet":
        return datasets.Dataset.from_dict({c: frame[c].tolist() for c in ("anchor", "positive", "negative")})
    scores = frame["score"].astype(float)
    if loss == "contrastive":
        scores = (scores >= relevance_threshold).astype(float)
    return datasets.Dataset.from_dict({"sentence1": frame["anchor"].tolist(), "sentence2": frame["positive"].tolist(),
                                       "score": scores.tolist()})


def source_version(data: str) -> tuple[int, int, int] | None:
    """(files, bytes, newest change) of a training file or dataset folder — what a UI keys its cache of the
    read data on; None for labels in storage (they change with every click on the Label page, and reading
    them is a query) and for paths that do not exist."""
    if data.startswith("labels:"):
        return None
    if data.startswith("bundled:"):
        return 0, 0, 0
    path = Path(data).expanduser()
    if not path.exists():
        return None
    stats = [f.stat() for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file()]
    return len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
