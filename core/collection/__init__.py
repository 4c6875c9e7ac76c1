"""Collections: a faiss index plus the items behind it (id, text, metadata), saved as one unit.

- ``memory``: the in-memory ``Collection`` (add, upsert, delete, search, save, load)
- ``policy``: which index kind ``auto`` picks for a size, and each kind's tuning
- ``search``: metadata filters as faiss ID selectors, exact re-ranking, single-query threading
- ``disk``: the folder format (manifest + generations, checksums, atomic commit)
- ``build``: the streamed build from batches, never holding all vectors
- ``catalogue``: collection names and the one commit of a saved index into the workspace database
- ``named``: named collections in a workspace — index a file, open, search, list, delete
- ``ray_shards`` / ``ray_index``: indexing corpora larger than one machine with Ray Data
"""

from core.collection.build import ItemBatch, save_streamed
from core.collection.disk import CollectionInfo, read_manifest
from core.collection.memory import Collection, Encoder
from core.collection.policy import index_bytes_per_vector, resolve_index_kind
from core.collection.search import Filter, SearchHit, check_k

__all__ = ["Collection", "CollectionInfo", "Encoder", "Filter", "ItemBatch", "SearchHit", "check_k",
           "index_bytes_per_vector", "read_manifest", "resolve_index_kind", "save_streamed"]
