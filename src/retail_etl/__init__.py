"""retail-etl: the nightly retail sales job (landing bucket -> lake, marts, quarantine)."""

__version__ = "0.1.0"
