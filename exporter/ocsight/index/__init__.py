"""ocsight's local index: the schema (`schema`), its refresh from the sources (`refresh`) and the
typed reader every consumer asks (`reader`), the only code that names the index's tables."""

from ocsight.index.reader import IndexReader
from ocsight.index.refresh import Index, index_path

__all__ = ["Index", "IndexReader", "index_path"]
