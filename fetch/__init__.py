"""liqreplay: the data layer (sources -> canonical frames -> Parquet lake)."""
