"""The real data sets, fetched and checked: ``labelreg data fetch`` and ``labelreg data check``.

``sources`` holds the published URLs and checksums, ``fetch`` downloads and places them in the layouts the
readers accept, ``check`` (with ``nyu_check``) says what is present, complete, and what to do about the rest.
"""
from labelreg.data.download.check import Status, check_root
from labelreg.data.download.fetch import FetchError, fetch_dataset
from labelreg.data.download.sources import DATASETS, SOURCES

__all__ = ["DATASETS", "FetchError", "SOURCES", "Status", "check_root", "fetch_dataset"]
